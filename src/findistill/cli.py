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


def _load(args: argparse.Namespace) -> tuple[RunConfig, Path, str | None]:
    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    config = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if not is_main():
        logging.getLogger("findistill").setLevel(logging.WARNING)  # the main process tells the progress
    return config, out, args.data_dir or os.environ.get("FINDISTILL_DATA_DIR")


def _tell(message: str) -> None:
    """Print ``message`` once (on the main process under accelerate launch)."""
    if is_main():
        print(message)


def run_main(argv: list[str]) -> int:
    from findistill.pipeline import run

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
    from findistill.predict import describe_examples
    from findistill.report import render_comparisons, render_table

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
    from findistill.pipeline import cache_folder, run

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
    from findistill.pipeline import run

    p = _parser("distill", "Train the distilled student (teacher labels are computed first if missing).")
    config, out, data_dir = _load(p.parse_args(argv))
    run(config, out, data_dir, stages=("teacher_finetune", "teacher_check", "label", "augment", "student_distilled"))
    _tell(f"distilled student: {out / 'student'}")
    return 0


def teacher_finetune_main(argv: list[str]) -> int:
    from findistill.pipeline import run

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
    from findistill.pipeline import run

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
    from findistill.pipeline import run

    p = _parser("evaluate", "Without --model: rebuild <run>/results.json and report.md from the predictions "
                            "already in the run folder (when they changed). With --model: evaluate that classifier folder on the "
                            "config's evaluation split and print its metrics as JSON.")
    p.add_argument("--model", help="a saved sequence-classification folder to evaluate")
    args = p.parse_args(argv)
    config, out, data_dir = _load(args)
    if not args.model:
        results = run(config, out, data_dir, stages=("report",))
        if results is not None and is_main():
            from findistill.report import render_table

            print(render_table(results["rows"]).rstrip("\n"))
        return 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from findistill.data import load_splits
    from findistill.evaluate import evaluate_row, predict_logits
    from findistill.model_refs import resolve_model

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
    from findistill.candidates import compare_candidates, render_markdown

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


def models_main(argv: list[str]) -> int:
    from findistill.model_refs import list_offline_models

    argparse.ArgumentParser(prog="findistill models", description="List the offline models.").parse_args(argv)
    for entry in list_offline_models():
        state = "installed" if entry["installed"] else f"missing: {entry.get('pip', entry['package'])}"
        print(f"{entry['name']:<24} {entry['package']:<32} {state}")
    return 0
