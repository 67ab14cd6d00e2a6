"""Argument parsing for the config-driven commands (run, label, distill, evaluate, teacher-finetune, augment,
candidates).

Each `*_main(argv)` parses its arguments, loads the YAML config (with `--set key=value` overrides) and calls
the pipeline. Configs are the source of truth; flags only say where things are. Under `accelerate launch` (several
processes) only the main process logs progress and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from findistill.config import ConfigError, RunConfig, load_config
from findistill.distributed import is_main


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"findistill {prog}", description=description)
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--data-dir", default=None,
                   help="folder with sent_train.csv / sent_valid.csv (default: $FINDISTILL_DATA_DIR)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=1 (value parsed as YAML; repeatable)")
    return p


def _overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> ``{key: value}`` (values parsed as YAML)."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _load(args: argparse.Namespace) -> tuple[RunConfig, Path, str | None]:
    config = load_config(args.config, _overrides(args.overrides))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if not is_main():
        logging.getLogger("findistill").setLevel(logging.WARNING)  # the main process tells the progress
    return config, out, args.data_dir or os.environ.get("FINDISTILL_DATA_DIR")


def _tell(message: str) -> None:
    """Print ``message`` once (on the main process under accelerate launch)."""
    if is_main():
        print(message)


def run_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import run

    p = _parser("run", "Run every stage: teacher (fine-tune, evaluate, label), students (baseline, CE-only, "
                       "distilled), report. A stage runs only when the config or data it depends on changed (or "
                       "its output is missing), so a rerun resumes and a changed key re-runs only what it touches.")
    p.add_argument("--dry-run", action="store_true", help="list which stages would run and why; run nothing")
    args = p.parse_args(argv)
    config, out, data_dir = _load(args)
    results = run(config, out, data_dir, dry_run=args.dry_run)
    if results is not None and is_main():
        _summary(out, results)
    return 0


def _summary(out: Path, results: dict) -> None:
    """The end of a run: its warnings, where its files are, and what the distilled student says of five sentences."""
    from findistill.deploy.predict import describe_examples
    from findistill.evaluation.report import render_comparisons, render_table

    print("\n" + render_table(results["rows"]).rstrip("\n"))
    comps = [c for c in results["comparisons"] if (c["a"], c["b"]) == ("student_distilled", "student_ce")]
    if comps:
        print("\n" + render_comparisons(comps).rstrip("\n"))
    for warning in results.get("warnings") or []:
        print(f"WARNING: {warning}")
    student = out / "student"
    print(f"\nreport:  {out / 'report.md'}" + (f"  and  {out / 'report.html'}" if (out / "report.html").is_file()
                                                 else ""))
    if (student / "config.json").is_file():
        print(f"student: {student}  (transformers.pipeline('text-classification', model='{student}'))")
        print("\nThe student on five sentences (label [calibrated probabilities]):")
        print(describe_examples(student))


def parse_shard(value: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else is a one-line ConfigError."""
    index, sep, count = value.partition("/")
    if sep and index.strip().isdigit() and count.strip().isdigit() and int(index) < int(count):
        return int(index), int(count)
    raise ConfigError("--shard", f"expected I/N with 0 <= I < N (shard I of N, e.g. 0/4), got {value!r}")


def label_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import cache_folder, run

    p = _parser("label", "Write the teacher's class logits for every evaluation, training and transfer text to "
                         "the chunked cache (<out>/cache, or cache.dir).")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="label only chunks I, I+N, I+2N, ... of each list (any machine); copying the N shards' "
                        "cache/ folders into one gives the cache one process writes")
    args = p.parse_args(argv)
    shard = parse_shard(args.shard) if args.shard is not None else None
    config, out, data_dir = _load(args)
    run(config, out, data_dir, stages=("teacher_finetune", "teacher_check", "label"), shard=shard)
    _tell(f"teacher logits cached under {cache_folder(config, out, 'cache')}")
    return 0


def distill_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import run

    p = _parser("distill", "Train the distilled student (teacher labels are computed first if missing).")
    config, out, data_dir = _load(p.parse_args(argv))
    run(config, out, data_dir, stages=("teacher_finetune", "teacher_check", "label", "augment", "student_distilled"))
    _tell(f"distilled student: {out / 'student'}")
    return 0


def teacher_finetune_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import run

    p = _parser("teacher-finetune", "LoRA fine-tune the config's teacher on gold labels; the merged teacher is "
                                    "saved to <run>/teacher and used for labelling.")
    args = p.parse_args(argv)
    config, out, data_dir = _load(args)
    if not config.teacher.finetune.enabled:
        raise ConfigError("teacher.finetune.enabled", "is false; set it true (or --set teacher.finetune.enabled=true)")
    run(config, out, data_dir, stages=("teacher_finetune",))
    _tell(f"fine-tuned teacher: {out / 'teacher'}")
    return 0


def augment_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import run

    p = _parser("augment", "Generate teacher paraphrases of the training texts and filter them.")
    config, out, data_dir = _load(p.parse_args(argv))
    if not config.augment.enabled:
        raise ConfigError("augment.enabled", "is false; set it true (or --set augment.enabled=true)")
    run(config, out, data_dir, stages=("teacher_finetune", "teacher_check", "augment"))
    summary = out / "augment" / "summary.json"
    if summary.is_file():
        _tell(summary.read_text())
    return 0


def evaluate_main(argv: list[str]) -> int:
    from findistill.pipeline.runner import run

    p = _parser("evaluate", "Without --model: rebuild <run>/results.json and report.md from the predictions "
                            "already in the run folder (when they changed). With --model: evaluate that classifier folder on the "
                            "config's evaluation split and print its metrics as JSON.")
    p.add_argument("--model", help="a saved sequence-classification folder to evaluate")
    args = p.parse_args(argv)
    config, out, data_dir = _load(args)
    if not args.model:
        results = run(config, out, data_dir, stages=("report",))
        if results is not None and is_main():
            from findistill.evaluation.report import render_table

            print(render_table(results["rows"]).rstrip("\n"))
        return 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from findistill.data.splits import load_splits
    from findistill.evaluation.metrics import evaluate_row, predict_logits
    from findistill.models.refs import resolve_model

    splits = load_splits(config.data, data_dir)
    path = resolve_model(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    logits = predict_logits(model, tokenizer, splits.eval.texts, batch_size=config.train.eval_batch_size,
                            max_length=config.student.max_length, desc="evaluate")
    row = evaluate_row(args.model, "student_distilled", splits.eval.labels, logits, config.eval)
    print(json.dumps(row, indent=2))
    return 0


def candidates_main(argv: list[str]) -> int:
    from findistill.pipeline.candidates import compare_candidates, render_markdown

    p = _parser("candidates", "Compare the config's teacher and student candidates on the dev split; writes "
                              "<out>/candidates.json and candidates.md with a recommendation per table.")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="teachers above this peak memory are not recommended (default: 80%% of GPU memory / RAM)")
    args = p.parse_args(argv)
    config, out, data_dir = _load(args)
    budget = None if args.memory_budget_gb is None else args.memory_budget_gb * 1024
    doc = compare_candidates(config, out, data_dir, budget)
    print(render_markdown(doc))
    print(f"candidates: {out / 'candidates.json'}, {out / 'candidates.md'}")
    return 0


def _analyze_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="findistill analyze",
        description="Slices, entity swap, negation/hedging probes, calibration and teacher-student disagreements, "
                    "with report.html. Either RUN (a finished `findistill run` folder: writes RUN/analysis/, "
                    "RUN/report.html, calibration.json and README.md model cards in the student folders) or "
                    "--model DIR --eval-file F (one saved classifier on a labelled file).")
    p.add_argument("run", nargs="?", help="a run folder holding config.yaml, predictions/ and results.json")
    p.add_argument("--data-dir", default=None,
                   help="RUN: folder with sent_train.csv / sent_valid.csv (default: $FINDISTILL_DATA_DIR)")
    p.add_argument("--model", help="a saved sequence-classification folder")
    p.add_argument("--eval-file", help="labelled CSV/TSV/JSONL/parquet to analyse the model on")
    p.add_argument("--dev-file", help="labelled file the temperature is fitted on (default: no temperature; the "
                                      "evaluation file is never used for fitting)")
    p.add_argument("--label-map", default=None,
                   help="canonical (default: names or 0/1/2), tfns (0 Bearish, 1 Bullish, 2 Neutral) or v=class,...")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=int, default=128, help="--model: maximum tokens per text")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="--model: output folder (default: analysis-<model folder name>)")
    return p


def analyze_main(argv: list[str]) -> int:
    import os

    from findistill.errors import DataError

    args = _analyze_parser().parse_args(argv)
    if args.model:
        if args.run or not args.eval_file:
            raise DataError("analyze: give either RUN, or --model DIR with --eval-file F")
        from findistill.analysis.analyze import analyze_model
        from findistill.deploy.export import parse_label_map

        out = args.out or f"analysis-{Path(args.model).resolve().name}"
        analyze_model(args.model, args.eval_file, out, parse_label_map(args.label_map), args.text_column,
                      args.label_column, args.dev_file, args.max_length, args.batch_size)
        return 0
    if not args.run:
        raise DataError("analyze: give either RUN, or --model DIR with --eval-file F")
    from findistill.config import load_config

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: not a run folder (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    from findistill.pipeline import Run
    from findistill.pipeline.analyze import analyze_run

    if analyze_run(Run(config, run_dir, args.data_dir or os.environ.get("FINDISTILL_DATA_DIR"))) is None:
        raise DataError(f"{run_dir}: no predictions to analyse; run `findistill run` first")
    return 0


def _yaml_value(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


def render_config_markdown() -> str:
    """docs/config.md: every key by section (the same source as `findistill config`; a test keeps the file current)."""
    from findistill.config import describe_keys

    lines = ["# Config keys", "", "Generated by `findistill config --markdown > docs/config.md` from the config dataclasses: "
             "the help texts are their `help` metadata, the ranges are the checks each section runs (a value outside "
             "one is a one-line error naming the key). `findistill config CONFIG` shows a config's own values beside "
             "them.", ""]
    sections: dict[str, list] = {"": []}  # the top-level keys first, then each section in config order
    for row in describe_keys():
        sections.setdefault(row.key.split(".")[0] if "." in row.key else "", []).append(row)

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    for section, rows in sections.items():
        lines += ["", f"## {section or 'top level'}", "", "| key | type | default | allowed | what it does |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{r.key}` | {cell(r.type)} | `{cell(_yaml_value(r.default))}` | {cell(r.range)} | "
                  f"{cell(r.help)} |" for r in rows]
    return "\n".join(lines) + "\n"


def config_main(argv: list[str]) -> int:
    import textwrap

    from findistill.config import describe_keys, to_dict

    p = argparse.ArgumentParser(prog="findistill config", description="Every config key with its type, default, "
                                "allowed range and help text; with CONFIG, that config's values beside them.")
    p.add_argument("config", nargs="?", help="a run config (YAML); keys it changes from the default are marked *")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as YAML; repeatable)")
    p.add_argument("--markdown", action="store_true", help="print docs/config.md instead")
    args = p.parse_args(argv)
    if args.markdown:
        print(render_config_markdown(), end="")
        return 0
    values = None
    if args.config:
        config = load_config(args.config, _overrides(args.overrides))
        values = {}

        def flatten(node: Any, prefix: str = "") -> None:
            for key, value in node.items():
                if isinstance(value, dict) and f"{prefix}{key}" not in {r.key for r in rows}:
                    flatten(value, f"{prefix}{key}.")
                else:
                    values[f"{prefix}{key}"] = value

        rows = describe_keys()
        flatten(to_dict(config))
    for row in describe_keys():
        head = f"{row.key}: {row.type} = {_yaml_value(row.default)}" + (f"   [{row.range}]" if row.range else "")
        if values is not None and row.key in values:
            changed = values[row.key] != row.default
            head = ("* " if changed else "  ") + head + (f"   -> {_yaml_value(values[row.key])}" if changed else "")
        print(head)
        print(textwrap.fill(row.help, width=100, initial_indent="      ", subsequent_indent="      "))
    return 0


def models_main(argv: list[str]) -> int:
    from findistill.models.refs import list_offline_models

    argparse.ArgumentParser(prog="findistill models", description="List the offline models.").parse_args(argv)
    for entry in list_offline_models():
        state = "installed" if entry["installed"] else f"missing: {entry.get('pip', entry['package'])}"
        print(f"{entry['name']:<24} {entry['package']:<32} {state}")
    return 0
