"""How configs/demo.yaml's student epochs and transfer mix were chosen: on the dev split, never on validation.

Four variants of the demo config share one teacher (all 8,589 gold tweets, 2 epochs, lr 1e-4); each is a run folder
made by ``findistill run configs/demo.yaml`` with the ``--set`` overrides below (the demo's own settings before this
choice, 2026-12-07). For each run this script reads the distilled and CE-only students' dev-selection scores (the
checkpoint-selection macro-F1 on the dev split), and measures label-free fidelity: the share of texts on which a student
agrees with its teacher, on 1,000 headlines and 1,000 report sentences held out of every variant's transfer texts
(seeded, written by ``--write-holdouts``), and on the dev tweets. Validation scores are listed too, for the record;
they chose nothing. The folders of B and D started as copies of A's, E's as a copy of B's (same teacher, labels and CE-only student;
only what the overrides change re-ran), and D and E ran side by side with OMP_NUM_THREADS=1 each.

    python benchmarks/demo_selection.py --holdout-dir /tmp/mix --write-holdouts      # once, before the runs
    python benchmarks/demo_selection.py --runs A=runs/demoA B=runs/demoB D=runs/demoD E=runs/demoE --holdout-dir /tmp/mix
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "demo_selection"
LEAD = ("--set data.max_train_examples=null --set teacher.finetune.epochs=2 "
        "--set teacher.finetune.learning_rate=1e-4")
MIX = "--set 'data.transfer_files=[zeroshot/twitter-financial-news-topic, HOLDOUT/nyt_rest.txt, HOLDOUT/tat_rest.txt]'"
VARIANTS = {
    "A": ("2 student epochs, transfer: tweets", f"{LEAD} --set train.epochs=2 "
          "--set 'data.transfer_files=[zeroshot/twitter-financial-news-topic]'"),
    "B": ("2 student epochs, transfer: tweets + headlines + report sentences", f"{LEAD} --set train.epochs=2 {MIX}"),
    "D": ("3 student epochs, transfer: tweets", f"{LEAD} --set train.epochs=3 "
          "--set 'data.transfer_files=[zeroshot/twitter-financial-news-topic]'"),
    "E": ("3 student epochs, transfer: tweets + headlines + report sentences", f"{LEAD} --set train.epochs=3 {MIX}"),
}
SOURCES = {"headlines": "nyt-economic-policy-headlines/headlines.txt", "report_sentences":
           "tat-qa-report-sentences/sentences.txt"}
SHORT = {"headlines": "nyt", "report_sentences": "tat"}


def write_holdouts(folder: Path, n: int = 1000, seed: int = 0) -> None:
    """Per source: ``<short>_holdout.txt`` (n seeded lines) and ``<short>_rest.txt`` (the rest, the transfer file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rel in SOURCES.items():
        lines = [line.strip() for line in (DATA / rel).read_text(encoding="utf-8").splitlines() if line.strip()]
        order = list(range(len(lines)))
        random.Random(seed).shuffle(order)
        held = set(order[:n])
        (folder / f"{SHORT[name]}_holdout.txt").write_text("\n".join(lines[i] for i in sorted(held)) + "\n")
        (folder / f"{SHORT[name]}_rest.txt").write_text(
            "\n".join(lines[i] for i in range(len(lines)) if i not in held) + "\n")


def measure(run: Path, holdouts: dict[str, list[str]]) -> dict:
    from findistill.config import load_config
    from findistill.data.splits import load_splits
    from findistill.deploy.runtime import load_classifier

    results = json.loads((run / "results.json").read_text())
    rows = {r["role"]: r for r in results["rows"]}
    dev = load_splits(load_config(run / "config.yaml").data, str(DATA / "twitter-financial-news-sentiment")).dev
    texts = {**holdouts, "dev_tweets": list(dev.texts)}
    teacher = {k: load_classifier(run / "teacher").predict_logits(v).argmax(1) for k, v in texts.items()}
    out: dict = {"teacher_label_counts": {k: np.bincount(p, minlength=3).tolist() for k, p in teacher.items()}}
    for role, folder in (("student_ce", "student_ce"), ("student_distilled", "student")):
        clf = load_classifier(run / folder)
        out[role] = {
            "dev_selection_macro_f1": rows[role]["selected_dev_metric"], "selected_step": rows[role]["selected_step"],
            "train_steps": rows[role]["train_steps"],
            "dev_accuracy": float((clf.predict_logits(texts["dev_tweets"]).argmax(1) == np.asarray(dev.labels)).mean()),
            "teacher_agreement": {k: float((clf.predict_logits(v).argmax(1) == teacher[k]).mean())
                                  for k, v in texts.items()},
            "validation_accuracy": rows[role]["accuracy"], "validation_macro_f1": rows[role]["macro_f1"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--holdout-dir", type=Path, required=True)
    p.add_argument("--write-holdouts", action="store_true")
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=FOLDER")
    args = p.parse_args(argv)
    if args.write_holdouts:
        write_holdouts(args.holdout_dir)
        return 0
    holdouts = {name: [line for line in (args.holdout_dir / f"{SHORT[name]}_holdout.txt").read_text().splitlines()
                       if line] for name in SOURCES}
    started = time.time()
    doc = {"command": "python " + " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
           "rule": "the distilled student's dev-selection macro-F1 chooses; fidelity on held-out text is reported "
                   "beside it; validation chooses nothing", "variants": {}}
    for item in args.runs:
        name, folder = item.split("=", 1)
        doc["variants"][name] = {"what": VARIANTS[name][0], "command": f"findistill run configs/demo.yaml "
                                 f"--out {folder} {VARIANTS[name][1]}".replace("HOLDOUT", str(args.holdout_dir)), **measure(Path(folder), holdouts)}
    doc["wall_time_s"] = round(time.time() - started, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# How the demo's student epochs and transfer mix were chosen (dev split)", "", f"`{doc['command']}`",
             f"· {doc['created']} · {doc['machine']} · {doc['wall_time_s']} s", "", f"Rule: {doc['rule']}.", "",
             "| variant | dev selection macro-F1 (distilled / CE) | dev accuracy (distilled) | teacher agreement: "
             "headlines / report sentences / dev tweets (distilled) | validation accuracy / macro-F1 (distilled) |",
             "|---|---:|---:|---:|---:|"]
    for name, v in doc["variants"].items():
        d, c = v["student_distilled"], v["student_ce"]
        a = d["teacher_agreement"]
        lines.append(f"| {name}: {v['what']} | {d['dev_selection_macro_f1']:.3f} / {c['dev_selection_macro_f1']:.3f} "
                     f"| {d['dev_accuracy']:.3f} | {a['headlines']:.3f} / {a['report_sentences']:.3f} / "
                     f"{a['dev_tweets']:.3f} | {d['validation_accuracy']:.3f} / {d['validation_macro_f1']:.3f} |")
    lines += ["", "Commands:", ""] + [f"- {name}: `{v['command']}`" for name, v in doc["variants"].items()]
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
