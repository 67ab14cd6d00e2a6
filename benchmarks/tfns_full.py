"""The full TFNS benchmark: one command, every row of the study's table on all 2,388 validation tweets.

    python benchmarks/tfns_full.py                      # full run (~1 h on 2 CPU cores), resumable
    python benchmarks/tfns_full.py --quick              # smoke run on small subsets (a few minutes)

Rows: majority class; the prompted teacher zero-shot and k-shot (``--few-shot``); the LoRA fine-tuned teacher;
the student untrained, CE-only and distilled (KD + CE). Each row: accuracy / macro-F1 with bootstrap CIs, params,
training wall time, inference examples/s. Paired bootstrap: distilled vs CE-only, distilled vs the tuned teacher,
tuned teacher vs CE-only student, tuned vs zero-shot teacher.

The main chain is ``findistill.pipeline.runner`` on the benchmark config (``--run-dir``, default ``runs/tfns_full``, is
a normal, resumable run folder holding the models); the prompted zero-/k-shot rows are extra teachers
(``build_teacher``, logits cached in ``<run-dir>/cache``).
Everything is merged into ``<out>/results.json`` (the results contract plus machine, command, date, targets,
stage times) and ``<out>/report.md`` (targets met / missed with the gap).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir, parse_overrides  # noqa: E402
from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "configs" / "tfns_full.yaml"
QUICK = {  # --quick: small stratified subsets, one epoch; the real models (a smoke test, not a measurement)
    "data.max_train_examples": 200, "data.max_dev_examples": 30, "data.max_eval_examples": 120,
    "teacher.finetune.max_train_examples": 64, "train.epochs": 1, "eval.bootstrap_samples": 1000,
}
TARGETS = {"accuracy": 0.88, "macro_f1": 0.85, "gain": 0.01}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/tfns_full.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark run config (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<config name>[_quick])")
    p.add_argument("--run-dir", default=None,
                   help="pipeline run folder with the models and caches (default: runs/<config name>[_quick], "
                        "git-ignored)")
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data/...)")
    p.add_argument("--few-shot", type=int, default=3, help="examples in the k-shot prompted teacher row (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as YAML; repeatable)")
    return p.parse_args(argv)


def _teacher_variant(base, few_shot: int, label: str):
    """The configured teacher, untuned, prompted with ``few_shot`` examples."""
    ft = dataclasses.replace(base.finetune, enabled=False)
    return dataclasses.replace(base, few_shot=few_shot, finetune=ft, name=f"{base.display_name} (prompted, {label})")


def prompted_rows(run, few_shot: int) -> dict[str, Any]:
    """Zero-shot and k-shot predictions of the untuned teacher on the evaluation split (cached, resumable)."""
    from findistill.teachers.cache import CachedTeacher
    from findistill.evaluation.prediction import Prediction
    from findistill.teachers import build_teacher

    config, splits = run.config, run.splits
    if config.teacher.kind != "prompted_lm":  # a classifier teacher has no prompt to vary
        return {}
    variants = {"teacher_zero_shot": (0, "zero-shot"), "teacher_few_shot": (few_shot, f"{few_shot}-shot")}
    if not config.teacher.finetune.enabled:  # the pipeline's own teacher row already is this variant
        variants = {k: v for k, v in variants.items() if v[0] != config.teacher.few_shot}
    preds = {}
    for role, (k, label) in variants.items():
        path = run.prediction_path(role)
        if not path.is_file():
            cfg = _teacher_variant(config.teacher, k, label)
            teacher = CachedTeacher(build_teacher(cfg, splits.train.texts, splits.train.labels, seed=config.data.seed),
                                    run.out / "cache")
            start = time.perf_counter()
            logits = teacher.class_logits(splits.eval.texts)
            seconds = time.perf_counter() - start
            Prediction(cfg.display_name, "teacher", logits, {
                "params": teacher.num_parameters, "trainable_params": 0, "train_wall_time_s": None,
                "examples_per_s": round(len(splits.eval) / seconds, 2) if teacher.misses else None,
            }).save(path)
            teacher.release()
        preds[role] = Prediction.load(path)
    return preds


def _target(name: str, met: bool, value: str, detail: str) -> dict[str, Any]:
    return {"target": name, "status": "met" if met else "missed", "value": value, "detail": detail}


def check_targets(rows: dict[str, dict], comps: dict[tuple[str, str, str], dict]) -> list[dict[str, Any]]:
    """The issue's three targets, each met / missed with its gap."""
    out = []
    d = rows.get("student_distilled")
    if d:
        gaps = (d["accuracy"] - TARGETS["accuracy"], d["macro_f1"] - TARGETS["macro_f1"])
        out.append(_target(f"distilled student accuracy >= {TARGETS['accuracy']:.2f} and macro-F1 >= "
                           f"{TARGETS['macro_f1']:.2f}", min(gaps) >= 0,
                           f"accuracy {d['accuracy']:.4f}, macro-F1 {d['macro_f1']:.4f}",
                           f"gap {gaps[0] * 100:+.1f} / {gaps[1] * 100:+.1f} points"))
    gain = comps.get(("student_distilled", "student_ce", "accuracy"))
    if gain:
        lo = gain["ci"][0]
        out.append(_target(f"distilled − CE-only accuracy >= +{TARGETS['gain'] * 100:.1f} point, paired CI > 0",
                           gain["diff"] >= TARGETS["gain"] and lo > 0,
                           f"{gain['diff'] * 100:+.2f} points [{lo * 100:+.2f}, {gain['ci'][1] * 100:+.2f}]",
                           f"gap {(gain['diff'] - TARGETS['gain']) * 100:+.2f} points; CI low {lo * 100:+.2f}"))
    strong = comps.get(("teacher", "student_ce", "accuracy"))
    if strong:
        lo = strong["ci"][0]
        out.append(_target("fine-tuned teacher clearly stronger than the CE-only student (paired accuracy CI > 0)",
                           lo > 0, f"{strong['diff'] * 100:+.2f} points [{lo * 100:+.2f}, "
                           f"{strong['ci'][1] * 100:+.2f}]", f"CI low {lo * 100:+.2f} points (needs > 0)"))
    return out


def merge(run, extra: dict[str, Any], pipeline_results: dict, started: float, command: str, quick: bool) -> dict:
    """One results document: pipeline rows + prompted teacher rows, comparisons, targets, machine, command."""
    from findistill.evaluation.metrics import evaluate_row, paired_bootstrap
    from findistill.evaluation.report import build_results

    ev, y = run.config.eval, np.asarray(run.splits.eval.labels)
    by_role = {r["role"]: dict(r) for r in pipeline_results["rows"]}
    summary_path = run.out / "teacher" / "finetune_summary.json"
    if "teacher" in by_role and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        by_role["teacher"].update(train_wall_time_s=summary["train_wall_time_s"],
                                  train_examples=summary["train_examples"],
                                  trainable_params=summary["trainable_params"])
    from findistill.evaluation.prediction import Prediction

    teacher_logits = None
    if run.prediction_path("teacher").is_file():
        teacher_logits = Prediction.load(run.prediction_path("teacher")).logits
    rows = [by_role.pop("majority")]
    for role, p in extra.items():
        rows.append(evaluate_row(p.name, "teacher", y, p.logits, ev, **p.meta))
    rows += [by_role[r] for r in ("teacher", "student_baseline", "student_ce", "student_distilled") if r in by_role]
    for row in rows:
        row.setdefault("train_wall_time_s", None)
        row.setdefault("examples_per_s", None)
    comparisons = [dict(c) for c in pipeline_results["comparisons"]]
    logits = {r: Prediction.load(run.prediction_path(r)).logits for r in ("student_ce",)
              if run.prediction_path(r).is_file()}
    pairs = [("teacher", "student_ce", teacher_logits, logits.get("student_ce"),
              "fine-tuned teacher − CE-only student")]
    if "teacher_zero_shot" in extra:
        pairs.append(("teacher", "teacher_zero_shot", teacher_logits, extra["teacher_zero_shot"].logits,
                      "fine-tuned teacher − zero-shot teacher"))
    for a, b, la, lb, name in pairs:
        if la is None or lb is None:
            continue
        for metric in ("accuracy", "macro_f1"):
            comparisons.append({"a": a, "b": b, "name": name, **paired_bootstrap(
                y, la.argmax(1), lb.argmax(1), metric, ev.bootstrap_samples, ev.confidence, ev.seed)})
    names = {("student_distilled", "student_ce"): "distilled − CE-only student",
             ("student_distilled", "teacher"): "distilled student − fine-tuned teacher"}
    for c in comparisons:
        c.setdefault("name", names.get((c["a"], c["b"]), f"{c['a']} − {c['b']}"))
    comps = {(c["a"], c["b"], c["metric"]): c for c in comparisons}
    targets = check_targets({r["role"]: r for r in rows if r["role"] != "teacher" or "fine-tuned" in r["name"]}, comps)
    return build_results(pipeline_results["dataset"], rows, comparisons, name=run.config.name, quick=quick,
                         command=command, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine=machine_info(),
                         total_wall_time_s=round(time.perf_counter() - started, 1), targets=targets,
                         config=pipeline_results.get("config"))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(results: dict, config_yaml: str) -> str:
    from findistill.evaluation.report import human_params, level_label, render_comparisons

    m, d = results["machine"], results["dataset"]
    title = "TFNS full benchmark" + (" — quick smoke run (subsets; not the benchmark)" if results["quick"] else "")
    lines = [f"# {title}", "", f"- Command: `{results['command']}`", f"- Date: {results['created']}",
             f"- Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if m["gpu"] else "") + f"; Python {m['python']}, torch {m['torch']}, "
             f"transformers {m['transformers']}, peft {m['peft']}",
             f"- Evaluation: `{d.get('name')}` split {d.get('split')}, n = {d.get('n'):,} "
             f"(train {d.get('n_train'):,}, dev {d.get('n_dev'):,}); wall time of this invocation "
             f"{results['total_wall_time_s'] / 60:.1f} min", "", "## Targets", "", "| target | value | status | gap |",
             "|---|---|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | **{t['status']}** | {t['detail']} |")
    level = level_label(results["rows"])
    lines += ["", "## Results", "", f"| model | role | params | accuracy [{level}] | macro-F1 [{level}] | "
              "train time (s) | examples/s |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        ci = lambda k: f"{r[k]:.4f} [{r[k + '_ci'][0]:.4f}, {r[k + '_ci'][1]:.4f}]"  # noqa: E731
        lines.append(f"| {r['name']} | {r['role']} | {human_params(r.get('params'))} | {ci('accuracy')} | "
                     f"{ci('macro_f1')} | {_fmt(r.get('train_wall_time_s'))} | {_fmt(r.get('examples_per_s'))} |")
    lines += ["", "Intervals: percentile bootstrap over evaluation rows; train time excludes model loading; "
              "examples/s is inference on this machine.", "", "## Paired comparisons", "",
              render_comparisons(results["comparisons"]).rstrip("\n"), "",
              "Per-class F1 and confusion matrices: `results.json` and "
              f"`{results.get('run_dir', 'the run folder')}/report.md`.", "", "## Config", "",
              "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from findistill.errors import FindistillError

    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except FindistillError as err:
        print(f"tfns_full: error: {err}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    import logging

    from findistill.config import dump_config, load_config
    from findistill.io import atomic_write_json, atomic_write_text
    from findistill.pipeline.runner import Run, run

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    overrides = dict(QUICK) if args.quick else {}
    overrides.update(parse_overrides(args.overrides))
    config = load_config(args.config, overrides)
    name = config.name + ("_quick" if args.quick else "")
    out = Path(args.out or REPO / "benchmarks" / "results" / name)
    run_dir = Path(args.run_dir or REPO / "runs" / name)
    data_dir = tfns_data_dir(args.data_dir)
    command = "python benchmarks/tfns_full.py" + "".join(" " + shlex.quote(a) for a in argv)
    started = time.perf_counter()
    results = run(config, run_dir, data_dir)
    stage_run = Run(config, run_dir, data_dir)
    extra = prompted_rows(stage_run, args.few_shot)
    merged = merge(stage_run, extra, results, started, command, args.quick)
    merged["run_dir"] = str(run_dir)
    atomic_write_json(out / "results.json", merged)
    atomic_write_text(out / "report.md", render(merged, dump_config(config)))
    for t in merged["targets"]:
        print(f"target {t['status']:>6}: {t['target']}: {t['value']} ({t['detail']})")
    print(f"\nbenchmark report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
