"""CPU throughput and latency of every deployment variant of a student (and optionally the teacher).

    python benchmarks/bench_deploy.py MODEL_DIR [--export-dir D] [--teacher MODEL_REF] [--texts FILE]

MODEL_DIR is a saved student (plain Hugging Face folder). Its variants are read from ``--export-dir`` (what
``findistill export`` wrote) or exported into a temporary folder first. For each variant: batch size 1 (p50/p95
latency per call, texts/s) and each of ``--batch-sizes`` (latency per batch, texts/s); the best batch size is the
fastest. ``--teacher`` also times a prompted causal LM read by its next-token logits (``findistill.teachers.base``).
Writes ``results.json`` and ``report.md`` (machine, versions, command, date) under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from findistill.machine import machine_info  # noqa: E402

_SUBJECTS = ["$AAPL", "$TSLA", "Apple", "Tesla", "Cemex", "the bank", "Nomura", "$BYND", "Carnival", "JPMorgan"]
_PHRASES = ["plunges after weak outlook", "cut to sell at Credit Suisse", "misses estimates on lower margins",
            "soars on strong earnings", "upgraded to buy with a $250 price target", "beats estimates again",
            "reports Q3 results", "to present at the Goldman Sachs conference", "announces dividend date",
            "shares jump to a record as investors cheer the buyback and the raised full-year guidance"]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_PHRASES)}" + (f" {rng.choice(_PHRASES)}" if i % 3 == 0 else "")
            for i in range(n)]


def measure(fn: Callable[[list[str]], Any], texts: list[str], batch_size: int, max_calls: int,
            max_seconds: float) -> dict[str, Any]:
    """Call ``fn`` on consecutive batches (after one warm-up call); per-call latency and texts/s."""
    fn(texts[:batch_size])
    latencies, done, start = [], 0, time.perf_counter()
    for call in range(max_calls):
        lo = (call * batch_size) % max(1, len(texts) - batch_size + 1)
        batch = texts[lo:lo + batch_size]
        t0 = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t0)
        done += len(batch)
        if time.perf_counter() - start > max_seconds and call >= 2:
            break
    total = sum(latencies)
    ms = np.array(latencies) * 1000
    return {"batch_size": batch_size, "calls": len(latencies), "texts": done,
            "texts_per_s": done / total if total > 0 else None,
            "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95))}


def bench_model(name: str, fn: Callable[[list[str]], Any], texts: list[str], batch_sizes: Sequence[int],
                calls: int, max_seconds: float) -> dict[str, Any]:
    single = measure(fn, texts, 1, calls, max_seconds)
    batched = [measure(fn, texts, b, max(3, len(texts) // b), max_seconds) for b in batch_sizes]
    best = max(batched, key=lambda r: r["texts_per_s"] or 0) if batched else single
    print(f"{name}: batch 1 p50 {single['latency_ms_p50']:.2f} ms, {single['texts_per_s']:.0f}/s; "
          f"best batch {best['batch_size']}: {best['texts_per_s']:.0f}/s", file=sys.stderr)
    return {"name": name, "batch_1": single, "batched": batched, "best": best}


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = ["# Deployment benchmark", "",
             f"{results['date']} · `{results['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}, onnxruntime intra-op "
             f"threads {m['cores']}); torch {m['torch']}, onnxruntime {m['onnxruntime']}, transformers "
             f"{m['transformers']}, Python {m['python']}.", "",
             f"{results['n_texts']} texts, max_length {results['max_length']}.", "",
             "| model | size (MB) | batch 1 p50 (ms) | batch 1 p95 (ms) | batch 1 texts/s | best batch | "
             "texts/s | p50 / p95 per batch (ms) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["models"]:
        s, b = row["batch_1"], row["best"]
        size = "–" if row.get("size_mb") is None else f"{row['size_mb']:.1f}"
        lines.append(f"| {row['name']} | {size} | {s['latency_ms_p50']:.2f} | {s['latency_ms_p95']:.2f} | "
                     f"{s['texts_per_s']:,.0f} | {b['batch_size']} | {b['texts_per_s']:,.0f} | "
                     f"{b['latency_ms_p50']:.1f} / {b['latency_ms_p95']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--export-dir", default=None, help="output of `findistill export` (default: export to a temp dir)")
    p.add_argument("--teacher", default=None, help="a causal LM reference (hub id, folder, offline model name)")
    p.add_argument("--texts", default=None, help="a .txt/.csv/.jsonl file of texts (default: synthetic tweets)")
    p.add_argument("--n-texts", type=int, default=512)
    p.add_argument("--batch-sizes", default="8,16,32,64,128")
    p.add_argument("--calls", type=int, default=200, help="batch-1 calls per variant")
    p.add_argument("--max-seconds", type=float, default=20.0, help="time cap per measurement")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--teacher-batch-size", type=int, default=8)
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "deploy"))
    args = p.parse_args(argv)

    from findistill.errors import FindistillError
    from findistill.deploy.runtime import EXPORT_VARIANTS, load_classifier, weights_size_mb

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    try:
        if args.texts:
            from findistill.deploy.predict import read_texts

            texts = read_texts(args.texts)[: args.n_texts]
        else:
            texts = synthetic_texts(args.n_texts)
        tmp = None
        export_dir = Path(args.export_dir) if args.export_dir else None
        if export_dir is None:
            from findistill.deploy.export import export

            tmp = tempfile.TemporaryDirectory(prefix="bench-deploy-")
            export_dir = Path(tmp.name) / "export"
            print(f"exporting {args.model_dir} to {export_dir} ...", file=sys.stderr)
            export(args.model_dir, export_dir, max_length=args.max_length)
        folders = {"fp32": Path(args.model_dir), **{v: export_dir / v for v in EXPORT_VARIANTS
                                                      if (export_dir / v).is_dir()}}
        rows = []
        for variant, folder in folders.items():
            clf = load_classifier(folder, max_length=args.max_length)
            row = bench_model(f"student {variant}", lambda b, c=clf: c.predict_proba(b, batch_size=len(b)),
                              texts, sizes, args.calls, args.max_seconds)
            rows.append({**row, "variant": variant, "size_mb": weights_size_mb(folder)})
            del clf
        if args.teacher:
            rows.append(bench_teacher(args, texts))
    except FindistillError as err:
        print(f"bench_deploy: error: {err}", file=sys.stderr)
        return 2
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
               "model_dir": str(Path(args.model_dir).resolve()), "n_texts": len(texts),
               "max_length": args.max_length, "models": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(render(results))
    print(render(results))
    if tmp is not None:
        tmp.cleanup()
    return 0


def safetensors_parameters(folder: Path) -> int:
    """Parameter count read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def bench_teacher(args: argparse.Namespace, texts: list[str]) -> dict:
    """Time the teacher: a sequence-classifier folder (e.g. a head-fine-tuned teacher) runs through the same
    runtime as the students; anything else is read as a prompted causal LM via its label-word logits."""
    from findistill.models.refs import resolve_model

    path = Path(resolve_model(args.teacher))
    config = path / "config.json"
    archs = (json.loads(config.read_text()).get("architectures") or []) if config.is_file() else []
    tb = [args.teacher_batch_size]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        from findistill.deploy.runtime import load_classifier

        clf = load_classifier(path, max_length=args.max_length)
        row = bench_model(f"teacher {args.teacher}", lambda b: clf.predict_proba(b, batch_size=len(b)),
                          texts, tb, min(args.calls, 20), args.max_seconds)
        from findistill.deploy.runtime import weights_size_mb

        return {**row, "variant": "teacher (classifier, fp32)", "size_mb": weights_size_mb(path),
                "parameters": safetensors_parameters(path)}
    from findistill.config import TeacherConfig
    from findistill.teachers import PromptedLMTeacher

    teacher = PromptedLMTeacher(TeacherConfig(model=args.teacher, dtype="float32"), device="cpu")

    def run_teacher(batch: list[str]) -> Any:
        teacher.cfg.batch_size = len(batch)
        return teacher.class_logits(batch, progress=False)

    row = bench_model(f"teacher {teacher.name}", run_teacher, texts, tb, min(args.calls, 20), args.max_seconds)
    return {**row, "variant": "teacher (prompted LM, fp32)", "size_mb": None, "parameters": teacher.num_parameters}


if __name__ == "__main__":
    sys.exit(main())
