"""Token lengths of the default teacher prompt on TFNS training tweets (the inputs of the labelling estimate in
docs/scaling.md): a tweet alone, the zero-shot prompt and the 3-shot prompt, with SmolLM2's tokenizer.

    python benchmarks/prompt_lengths.py [--n 1000]      # writes benchmarks/results/prompt_lengths/results.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir  # noqa: E402

from findistill.io import atomic_write_json  # noqa: E402
from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from findistill.config import DataConfig, TeacherConfig
    from findistill.data.splits import load_splits
    from findistill.models.refs import resolve_model
    from findistill.teachers.prompts import build_prompt, select_few_shot

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="training tweets measured (the first N; default %(default)s)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    args = p.parse_args(argv)
    start = time.perf_counter()
    splits = load_splits(DataConfig(), tfns_data_dir(None))
    train = splits.train
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    cfg = TeacherConfig(model=args.model)
    shots = select_few_shot(train.texts, train.labels, 3, 42)
    texts = train.texts[: args.n]

    def lengths(make) -> dict:
        n = np.array([len(tokenizer.encode(make(t), add_special_tokens=False)) for t in texts])
        return {"mean": round(float(n.mean()), 1), "p50": int(np.percentile(n, 50)), "p95": int(np.percentile(n, 95))}

    result = {"command": "python benchmarks/prompt_lengths.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tokenizer": args.model, "n": len(texts),
              "tweet_alone": lengths(lambda t: t), "zero_shot": lengths(lambda t: build_prompt(tokenizer, cfg, t)),
              "three_shot": lengths(lambda t: build_prompt(tokenizer, cfg, t, shots)),
              "wall_time_s": round(time.perf_counter() - start, 1), "machine": machine_info()}
    atomic_write_json(REPO / "benchmarks" / "results" / "prompt_lengths" / "results.json", result)
    print({k: result[k] for k in ("tweet_alone", "zero_shot", "three_shot")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
