"""Where is the teacher least sure? Its labels of the transfer tweets, grouped by the tweets' topic (issue 22).

    python benchmarks/teacher_by_topic.py --run-dir runs/frontier     # after the frontier's label stage

The transfer tweets (``zeroshot/twitter-financial-news-topic``) carry a **topic** label (0 Analyst Update ... 19 Stock
Movement, the dataset card's names). It is never a sentiment and never trains anything; here it only groups the
teacher's soft labels, read from the run's teacher cache (no teacher runs): per topic, the tweets, the teacher's class
shares, its mean confidence (highest class probability), the share of tweets below a confidence threshold (0.9, the
default of ``teacher.finetune.self_training.min_confidence``) and the mean entropy. Topics are listed least sure first:
where a student learns the least certain labels, and what self-training at that threshold would leave out.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from frontier import DEFAULT_CONFIG, commands_so_far, open_run  # noqa: E402

from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt", "Dividend",
          "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion", "Gold | Metals | Materials",
          "IPO", "Legal | Regulation", "M&A | Investments", "Macro", "Markets", "Politics", "Personnel Change",
          "Stock Commentary", "Stock Movement"]  # huggingface.co/datasets/zeroshot/twitter-financial-news-topic card
TOPIC_FILES = ("topic_train.csv", "topic_valid.csv")


def read_topics(folder: Path) -> dict[str, int]:
    """Normalised text -> topic id, from the topic dataset's CSVs (``text,label``); the first row of a text wins."""
    from findistill.data.splits import normalize_text

    found: dict[str, int] = {}
    for name in TOPIC_FILES:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"teacher_by_topic: {path} not found (--topic-dir: the twitter-financial-news-topic folder)")
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                found.setdefault(normalize_text(row["text"]), int(row["label"]))
    return found


def by_topic(topics: list[int | None], logits: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """Per topic (texts without one are left out): n, the teacher's class shares, mean confidence, the share below
    ``threshold`` and the mean entropy (nats); least confident first."""
    from findistill.config import LABELS
    from findistill.models.inference import softmax

    probs = softmax(np.asarray(logits, dtype=np.float64))  # [N, 3]
    confidence = probs.max(1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
    predicted = probs.argmax(1)
    rows = []
    for topic in sorted({t for t in topics if t is not None}):
        idx = np.array([i for i, t in enumerate(topics) if t == topic])
        rows.append({"topic": topic, "name": TOPICS[topic] if 0 <= topic < len(TOPICS) else str(topic),
                     "n": int(len(idx)),
                     "teacher_classes": {name: float((predicted[idx] == c).mean()) for c, name in enumerate(LABELS)},
                     "mean_confidence": float(confidence[idx].mean()),
                     "below_threshold": float((confidence[idx] < threshold).mean()),
                     "mean_entropy": float(entropy[idx].mean())})
    return sorted(rows, key=lambda r: r["mean_confidence"])


def render(results: dict[str, Any]) -> str:
    t = results["threshold"]
    lines = ["# The teacher's labels of the transfer tweets, by topic", "", "- Commands (in order):",
             *[f"  - `{c}`" for c in results["commands"]], f"- Built: {results['created']}; machine: "
             f"{results['machine']['cpu']}, {results['machine']['cores']} cores",
             f"- Teacher: {results['teacher']}; {results['matched']:,} of {results['transfer_texts']:,} transfer texts "
             "matched to a topic (the topic is never a sentiment label; it only groups the teacher's labels)", "",
             f"Least sure first. Confidence: the teacher's highest class probability; below {t:g}: what "
             f"self-training at min_confidence {t:g} would leave out.", "",
             f"| topic | tweets | negative | neutral | positive | mean confidence | below {t:g} | mean entropy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["topics"]:
        c = r["teacher_classes"]
        lines.append(f"| {r['topic']} {r['name'].replace('|', chr(92) + '|')} | {r['n']:,} | {c['negative']:.0%} | {c['neutral']:.0%} | "
                     f"{c['positive']:.0%} | {r['mean_confidence']:.3f} | {r['below_threshold']:.0%} | "
                     f"{r['mean_entropy']:.3f} |")
    a = results["all"]
    lines.append(f"| all matched | {a['n']:,} | {a['teacher_classes']['negative']:.0%} | "
                 f"{a['teacher_classes']['neutral']:.0%} | {a['teacher_classes']['positive']:.0%} | "
                 f"{a['mean_confidence']:.3f} | {a['below_threshold']:.0%} | {a['mean_entropy']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import json
    import logging

    from findistill.io import atomic_write_json, atomic_write_text

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python benchmarks/teacher_by_topic.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the run's config (default: %(default)s)")
    p.add_argument("--run-dir", default=None, help="a run whose label stage finished (default: runs/<config name>)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "teacher_by_topic"))
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data)")
    p.add_argument("--topic-dir", default=None,
                   help="twitter-financial-news-topic folder (default: beside the TFNS folder)")
    p.add_argument("--threshold", type=float, default=0.9, help="confidence threshold (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.report = True
    config, run, out, _, command = open_run(args, "teacher_by_topic.py", argv)
    transfer = run.splits.transfer
    if transfer is None or not len(transfer):
        raise SystemExit("teacher_by_topic: the config has no transfer texts (data.transfer_files)")
    topic_dir = Path(args.topic_dir) if args.topic_dir else Path(run.data_dir).parent / "twitter-financial-news-topic"
    lookup = read_topics(topic_dir)
    topics = [lookup.get(text) for text in transfer.texts]  # transfer texts are stored normalised
    logits = run.teacher_logits(transfer)  # from the cache: the label stage must have run
    rows = by_topic(topics, logits, args.threshold)
    whole = by_topic([0 if t is not None else None for t in topics], logits, args.threshold)[0]
    results = {"commands": commands_so_far(Path(out) / "results.json", command),
               "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
               "teacher": run.teacher_config().name, "transfer_texts": len(transfer),
               "matched": sum(t is not None for t in topics), "threshold": args.threshold, "topics": rows,
               "all": {k: v for k, v in whole.items() if k not in ("topic", "name")}}
    atomic_write_json(Path(out) / "results.json", results)
    atomic_write_text(Path(out) / "report.md", render(results))
    print(f"\nteacher by topic: {Path(out) / 'report.md'}")
    print(json.dumps({r["name"]: round(r["mean_confidence"], 3) for r in rows[:5]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
