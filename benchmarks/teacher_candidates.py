"""Teacher candidates in one table: dev and validation scores of fine-tuned teachers and their ensembles (issue 22).

    python benchmarks/teacher_candidates.py \\
        --candidate mpnet-2ep=runs/frontier/teacher --candidate minilm-l6=runs/demo/teacher \\
        --candidate "ensemble=runs/frontier/teacher+runs/demo/teacher"

A candidate is a saved sequence-classifier folder (a fine-tuned teacher: ``<run>/teacher``), or ``A+B+...``: the
ensemble of those folders (:class:`~findistill.teachers.EnsembleTeacher`, the mean of the members' probabilities).
Every candidate is scored on the dev split of the config's data (``--config``, default the frontier config: the same
seeded dev split every teacher was selected on) and on the evaluation split. The rule: the candidate with the best dev
macro-F1 is the teacher; validation is shown for the record and chooses nothing. Results are merged by candidate name
into ``--out`` (resumable: a candidate already scored is kept unless named again).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir  # noqa: E402

from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "configs" / "frontier.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "teacher_candidates"


def teacher_config(spec: str, name: str, base: Any) -> Any:
    """The TeacherConfig of a candidate: one folder, or ``A+B``: the ensemble of the folders."""
    import dataclasses

    from findistill.config import TeacherConfig

    def member(folder: str) -> TeacherConfig:
        if not (Path(folder) / "config.json").is_file():
            raise SystemExit(f"teacher_candidates: {folder} is not a saved model folder (no config.json)")
        return TeacherConfig(kind="classifier", model=folder, name=Path(folder).name, batch_size=base.batch_size,
                             max_length=base.max_length)

    folders = [f for f in spec.split("+") if f]
    if len(folders) == 1:
        return dataclasses.replace(member(folders[0]), name=name)
    return TeacherConfig(kind="ensemble", name=name, members=[member(f) for f in folders])


def build_candidate(spec: str, name: str, base: Any, cache_dir: Path) -> Any:
    """The candidate as a teacher: each member folder behind the teacher cache (:class:`CachedTeacher`, so a folder
    scored once, alone or in an ensemble, is never run again on the same texts), several folders as their
    :class:`EnsembleTeacher` (the mean of the members' probabilities, as ``kind: ensemble`` runs it)."""
    from findistill.teachers import EnsembleTeacher, build_teacher
    from findistill.teachers.cache import CachedTeacher

    cfg = teacher_config(spec, name, base)
    members = cfg.members if cfg.kind == "ensemble" else [cfg]
    cached = [CachedTeacher(lambda m=m: build_teacher(m), cache_dir / Path(m.model).resolve().as_posix().strip("/")
                            .replace("/", "__")) for m in members]
    return EnsembleTeacher(cached, name=name) if cfg.kind == "ensemble" else cached[0]


def score(spec: str, name: str, config: Any, splits: Any, cache_dir: Path) -> dict[str, Any]:
    from findistill.evaluation.metrics import evaluate_row

    teacher = build_candidate(spec, name, config.teacher, cache_dir)
    row: dict[str, Any] = {"name": name, "spec": spec, "params": teacher.num_parameters}
    for split_name, split in (("dev", splits.dev), ("validation", splits.eval)):
        start = time.perf_counter()
        logits = teacher.class_logits(split.texts)
        r = evaluate_row(name, "teacher", np.asarray(split.labels), logits, config.eval)
        row[split_name] = {k: r[k] for k in ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci")}
        row[split_name]["seconds"] = round(time.perf_counter() - start, 1)
    teacher.release()
    return row


def render(results: dict[str, Any]) -> str:
    lines = ["# Teacher candidates", "", "- Commands (in order):", *[f"  - `{c}`" for c in results["commands"]],
             f"- Built: {results['created']}; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores",
             f"- Dev split: {results['n_dev']:,} texts; validation: {results['n_eval']:,} texts", "",
             f"Rule: {results['rule']}. Chosen: **{results['chosen'] or '—'}**.", "",
             "| candidate | params | dev accuracy | dev macro-F1 | validation accuracy [CI] | validation macro-F1 |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in sorted(results["candidates"].values(), key=lambda c: -c["dev"]["macro_f1"]):
        v, d = c["validation"], c["dev"]
        lines.append(f"| {c['name']} (`{c['spec']}`) | {c['params'] / 1e6:.1f}M | {d['accuracy']:.4f} | "
                     f"{d['macro_f1']:.4f} | {v['accuracy']:.4f} [{v['accuracy_ci'][0]:.4f}, "
                     f"{v['accuracy_ci'][1]:.4f}] | {v['macro_f1']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import json
    import logging

    from findistill.config import load_config
    from findistill.data.splits import load_splits
    from findistill.io import atomic_write_json, atomic_write_text

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python benchmarks/teacher_candidates.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=FOLDER[+FOLDER...]")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="whose data, dev split and eval settings")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "teacher_candidates" / "cache"),
                   help="teacher cache of every member folder's logits (default: %(default)s, git-ignored)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config = load_config(args.config)
    splits = load_splits(config.data, tfns_data_dir(args.data_dir))
    out = Path(args.out)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    candidates = dict(previous.get("candidates", {}))
    for item in args.candidate:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            p.error(f"--candidate takes NAME=FOLDER[+FOLDER...], got {item!r}")
        candidates[name] = score(spec, name, config, splits, Path(args.cache_dir))
        print(f"[teacher_candidates] {name}: dev macro-F1 {candidates[name]['dev']['macro_f1']:.4f}", flush=True)
    command = "python benchmarks/teacher_candidates.py" + "".join(" " + shlex.quote(a) for a in argv)
    commands = list(previous.get("commands", [])) + [command]
    chosen = max(candidates.values(), key=lambda c: c["dev"]["macro_f1"])["name"] if candidates else None
    results = {"commands": commands, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
               "n_dev": len(splits.dev), "n_eval": len(splits.eval), "candidates": candidates, "chosen": chosen,
               "rule": "the candidate with the best dev macro-F1 (validation chooses nothing)"}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results))
    print(f"\nteacher candidates: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
