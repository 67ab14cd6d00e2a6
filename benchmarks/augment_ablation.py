"""Paraphrase-augmentation ablation: KD alone vs KD + unfiltered vs KD + filtered teacher paraphrases.

    python benchmarks/augment_ablation.py                 # needs runs/tfns_mpnet/teacher (see the config), ~30 min
    python benchmarks/augment_ablation.py --set data.max_train_examples=500   # smaller

Three ``findistill run`` folders under ``--run-dir`` (default ``runs/<config name>``), one per variant of the same
config: ``kd`` (augmentation off, plus the CE-only student), ``kd_unfiltered`` (every non-empty paraphrase joins
training with its source's gold label and its own teacher soft label) and ``kd_filtered`` (the filter chain of
``findistill.data.augment`` on). All three students get the same budget: ``train.max_steps`` is set to the number of
optimizer steps the KD-only student takes over its epochs, so the augmented students see the same number of
examples, not more. The variants share work through one cache folder (``cache.dir`` = ``<run-dir>/cache``): the
teacher labels each text once and the filtered run reads the unfiltered run's paraphrases (both are keyed by
content, so a file is only reused when it matches). Output: ``<out>/results.json`` (results contract;
``augmentation`` = the filtered variant's counts, ``augmentation_unfiltered`` the other's) and ``<out>/report.md``
with paired bootstrap CIs against KD alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
DEFAULT_CONFIG = REPO / "benchmarks" / "configs" / "augment_ablation.yaml"
VARIANTS = {  # folder -> (augment.enabled, augment.filter, label)
    "kd": (False, True, "KD + CE"),
    "kd_unfiltered": (True, False, "KD + CE, + unfiltered paraphrases"),
    "kd_filtered": (True, True, "KD + CE, + filtered paraphrases"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/augment_ablation.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base run config (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<config name>)")
    p.add_argument("--run-dir", default=None, help="folder of the three run folders (default: runs/<config name>)")
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as YAML; repeatable)")
    return p.parse_args(argv)


def budget_steps(n_train: int, train_cfg: Any) -> int:
    """Optimizer steps of the KD-only student: ceil(epochs * ceil(n / (batch * accumulation)))."""
    if train_cfg.max_steps > 0:
        return int(train_cfg.max_steps)
    per_epoch = math.ceil(n_train / (train_cfg.batch_size * train_cfg.gradient_accumulation_steps))
    return int(math.ceil(train_cfg.epochs * per_epoch))


def variant_config(base: Any, folder: str, steps: int, cache_dir: Path) -> Any:
    """The config of one variant; all variants share ``cache_dir`` (teacher logits and paraphrases, content-keyed),
    so the teacher labels each text once and the filtered run reuses the unfiltered run's paraphrases."""
    enabled, filtered, _ = VARIANTS[folder]
    augment = dataclasses.replace(base.augment, enabled=enabled, filter=filtered)
    train = dataclasses.replace(base.train, max_steps=steps)
    cache = dataclasses.replace(base.cache, dir=base.cache.dir or str(cache_dir))
    first = folder == "kd"  # teacher row and CE-only student once, in the KD run
    return dataclasses.replace(base, name=f"{base.name}-{folder}", augment=augment, train=train, cache=cache,
                               evaluate_teacher=base.evaluate_teacher and first,
                               train_ce_student=base.train_ce_student and first)


def collect(run_dir: Path, configs: dict[str, Any], results: dict[str, dict], data_dir: str | None,
            started: float, command: str) -> dict[str, Any]:
    """One results document: majority, teacher, CE-only and the three KD students; paired CIs against KD."""
    from findistill.evaluation.metrics import paired_bootstrap
    from findistill.evaluation.prediction import Prediction
    from findistill.pipeline import Run
    from findistill.evaluation.report import build_results

    kd = results["kd"]
    ev = configs["kd"].eval
    y = np.asarray(Run(configs["kd"], run_dir / "kd", data_dir).splits.eval.labels)
    rows = [dict(r) for r in kd["rows"] if r["role"] != "student_distilled"]
    logits = {}
    for folder, (_, _, label) in VARIANTS.items():
        row = next(dict(r) for r in results[folder]["rows"] if r["role"] == "student_distilled")
        row["name"] = row["name"].replace("(KD + CE)", f"({label})")
        row["variant"] = folder
        rows.append(row)
        logits[folder] = Prediction.load(Run(configs[folder], run_dir / folder, data_dir)
                                         .prediction_path("student_distilled")).logits
    comparisons = [dict(c, name="KD − CE-only student") for c in kd["comparisons"]
                   if (c["a"], c["b"]) == ("student_distilled", "student_ce")]
    pairs = [("kd_unfiltered", "kd", "unfiltered paraphrases − KD alone"),
             ("kd_filtered", "kd", "filtered paraphrases − KD alone"),
             ("kd_filtered", "kd_unfiltered", "filtered − unfiltered paraphrases")]
    for a, b, name in pairs:
        for metric in ("accuracy", "macro_f1"):
            comparisons.append({"a": a, "b": b, "name": name, **paired_bootstrap(
                y, logits[a].argmax(1), logits[b].argmax(1), metric, ev.bootstrap_samples, ev.confidence, ev.seed)})
    return build_results(kd["dataset"], rows, comparisons, name=configs["kd"].name.rsplit("-", 1)[0],
                         command=command, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine=machine_info(),
                         total_wall_time_s=round(time.perf_counter() - started, 1),
                         budget_steps=configs["kd"].train.max_steps,
                         augmentation=results["kd_filtered"].get("augmentation"),
                         augmentation_unfiltered=results["kd_unfiltered"].get("augmentation"),
                         run_dir=str(run_dir))


def _ci(r: dict, k: str) -> str:
    return f"{r[k]:.4f} [{r[k + '_ci'][0]:.4f}, {r[k + '_ci'][1]:.4f}]"


def render(results: dict, config_yaml: str) -> str:
    from findistill.evaluation.report import human_params, level_label, render_comparisons

    m, d = results["machine"], results["dataset"]
    level = level_label(results["rows"])
    lines = ["# Paraphrase-augmentation ablation", "", f"- Command: `{results['command']}`",
             f"- Date: {results['created']}",
             f"- Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if m["gpu"] else "") + f"; torch {m['torch']}, transformers {m['transformers']}",
             f"- Evaluation: `{d.get('name')}` split {d.get('split')}, n = {d.get('n'):,} (train {d.get('n_train'):,})"
             f"; wall time {results['total_wall_time_s'] / 60:.1f} min",
             f"- Budget: every student trains {results['budget_steps']} optimizer steps (the KD-only student's "
             "epochs); augmented students see the same number of examples, drawn from a larger pool.", "",
             "## Results", "", f"| model | role | params | accuracy [{level}] | macro-F1 [{level}] | "
             "train examples | train time (s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        wall = r.get("train_wall_time_s")
        lines.append(f"| {r['name']} | {r['role']} | {human_params(r.get('params'))} | {_ci(r, 'accuracy')} | "
                     f"{_ci(r, 'macro_f1')} | {r.get('train_examples', '—')} | "
                     f"{'—' if wall is None else f'{wall:,.1f}'} |")
    lines += ["", "## Paired comparisons (same evaluation rows)", "",
              render_comparisons(results["comparisons"]).rstrip("\n"), "", "## The filter", ""]
    for key, title in (("augmentation_unfiltered", "unfiltered (only empty outputs dropped)"),
                       ("augmentation", "filtered")):
        a = results.get(key) or {}
        dropped = ", ".join(f"{k} {v}" for k, v in (a.get("dropped") or {}).items() if v) or "none"
        lines.append(f"- {title}: {a.get('generated', 0)} generated, {a.get('kept', 0)} kept; dropped: {dropped}")
    examples = (results.get("augmentation") or {}).get("examples") or {}
    if examples:
        lines += ["", "Dropped examples (filtered run, up to 2 per reason):", "", "| reason | source | paraphrase |",
                  "|---|---|---|"]
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")[:160]  # noqa: E731
        for reason, items in examples.items():
            for ex in items[:2]:
                lines.append(f"| {reason} | {cell(ex.get('source', ''))} | {cell(ex.get('paraphrase', ''))} |")
    lines += ["", "## Base config", "", "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from findistill.errors import FindistillError

    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except FindistillError as err:
        print(f"augment_ablation: error: {err}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    import logging

    from findistill.config import dump_config, load_config
    from findistill.io import atomic_write_json, atomic_write_text
    from findistill.pipeline.runner import Run, run

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    overrides = {}
    overrides.update(parse_overrides(args.overrides))
    base = load_config(args.config, overrides)
    out = Path(args.out or REPO / "benchmarks" / "results" / base.name)
    run_dir = Path(args.run_dir or REPO / "runs" / base.name)
    data_dir = tfns_data_dir(args.data_dir)
    command = "python benchmarks/augment_ablation.py" + "".join(" " + shlex.quote(a) for a in argv)
    started = time.perf_counter()
    n_train = len(Run(base, run_dir / "kd", data_dir).splits.train)
    steps = budget_steps(n_train, base.train)
    configs = {folder: variant_config(base, folder, steps, run_dir / "cache") for folder in VARIANTS}
    results: dict[str, dict] = {}
    for folder, cfg in configs.items():
        print(f"\n== {folder}: {VARIANTS[folder][2]} ({steps} steps) ==", flush=True)
        results[folder] = run(cfg, run_dir / folder, data_dir)
    merged = collect(run_dir, configs, results, data_dir, started, command)
    atomic_write_json(out / "results.json", merged)
    atomic_write_text(out / "report.md", render(merged, dump_config(base)))
    for c in merged["comparisons"]:
        lo, hi = c["ci"]
        print(f"{c['name']}, {c['metric']}: {c['diff'] * 100:+.2f} points [{lo * 100:+.2f}, {hi * 100:+.2f}]")
    print(f"\nablation report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
