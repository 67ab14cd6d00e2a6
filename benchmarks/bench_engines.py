"""Teacher engines, HF vs vLLM: texts/s for labelling (class logits of a prompted teacher) and for paraphrasing.

Each backend runs the same task on the same texts: SmolLM2-135M-Instruct (or ``--model``) prompted on TFNS dev
tweets (the dev split carved from train), and ``augment``'s paraphrase generation of training tweets (one per
tweet, the augment config's sampling settings). Model load / engine start-up is timed apart from the work, and a
few texts are run first as a warm-up. The label agreement of the two backends on the labelled texts is reported.

    .venv-vllm/bin/python benchmarks/bench_engines.py                      # CPU: both backends, results below
    .venv-vllm/bin/python benchmarks/bench_engines.py --n-label 8 --n-paraphrase 4 --out /tmp/engines  # a dry run

Output: ``<out>/results.json`` and ``<out>/report.md`` (command, machine, date, wall time, the load average at the
start and the end: a load average above ~0.5 per core means other processes shared the cores, and the report says
so plainly). vLLM is imported only for ``--backends`` containing vllm; entry point under ``__main__`` (vLLM spawns).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir, timing_report_head  # noqa: E402
from findistill.machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_engines.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="teacher / paraphrase model reference")
    p.add_argument("--backends", default="hf,vllm", help="comma-separated: hf, vllm")
    p.add_argument("--n-label", type=int, default=300, help="dev tweets labelled per backend")
    p.add_argument("--n-paraphrase", type=int, default=48, help="training tweets paraphrased per backend")
    p.add_argument("--batch-size", type=int, default=32, help="hf: prompts per forward pass (labelling)")
    p.add_argument("--gen-batch-size", type=int, default=8, help="hf: prompts per generate() call (augment.batch_size)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="both backends (auto: bf16 on CUDA with bf16 support, else float32)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM (null: 0.9 on GPU, 0.3 on CPU)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--enforce-eager", action="store_true", help="vLLM: skip torch.compile (starts faster, runs slower)")
    p.add_argument("--warmup", type=int, default=4, help="texts run once before timing")
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engines"))
    return p.parse_args(argv)


def _teacher_cfg(args: argparse.Namespace, backend: str) -> Any:
    from findistill.config import TeacherConfig, VLLMSettings

    return TeacherConfig(model=args.model, dtype=args.dtype, batch_size=args.batch_size, backend=backend,
                         vllm=VLLMSettings(gpu_memory_utilization=args.gpu_memory_utilization,
                                           tensor_parallel_size=args.tensor_parallel_size,
                                           max_model_len=args.max_model_len, enforce_eager=args.enforce_eager))


def _augment_cfg(args: argparse.Namespace) -> Any:
    from findistill.config import AugmentConfig

    return AugmentConfig(enabled=True, num_paraphrases=1, max_new_tokens=args.max_new_tokens,
                         batch_size=args.gen_batch_size, seed=1234)


def run_backend(backend: str, args: argparse.Namespace, label_texts: list[str], para_texts: list[str],
                tmp: Path) -> tuple[dict[str, Any], Any]:
    """Time one backend: load, labelling, paraphrasing. Returns (row, class logits of ``label_texts``)."""
    from findistill.data.augment import generate_paraphrases, load_generator
    from findistill.teachers import PromptedLMTeacher

    row: dict[str, Any] = {"backend": backend}
    start = time.perf_counter()
    teacher = PromptedLMTeacher(_teacher_cfg(args, backend))
    row["load_s"] = round(time.perf_counter() - start, 2)
    row["dtype"] = teacher.fingerprint()["dtype"]
    teacher.class_logits(label_texts[: args.warmup], progress=False)
    start = time.perf_counter()
    logits = teacher.class_logits(label_texts, progress=False)
    seconds = time.perf_counter() - start
    row.update(label_texts=len(label_texts), label_s=round(seconds, 2), label_texts_per_s=round(len(label_texts) / seconds, 2))

    cfg = _augment_cfg(args)
    if backend == "vllm":
        generator, tokenizer = teacher.backend, teacher.tokenizer  # the teacher's engine, as augment uses it
    else:
        generator, tokenizer = load_generator(args.model)
    generate_paraphrases(generator, tokenizer, para_texts[: args.warmup], cfg, tmp / f"warm-{backend}.jsonl",
                         progress=False)
    start = time.perf_counter()
    out = generate_paraphrases(generator, tokenizer, para_texts, cfg, tmp / f"para-{backend}.jsonl", progress=False)
    seconds = time.perf_counter() - start
    new_tokens = sum(len(tokenizer.encode(c.text, add_special_tokens=False)) for c in out)
    row.update(paraphrase_texts=len(para_texts), paraphrase_s=round(seconds, 2),
               paraphrase_texts_per_s=round(len(para_texts) / seconds, 3),
               paraphrase_new_tokens_per_s=round(new_tokens / seconds, 1),
               paraphrase_example=out[0].text if out else None)
    teacher.release()
    del generator, teacher
    gc.collect()
    return row, logits


def render(result: dict[str, Any]) -> str:
    lines = timing_report_head("Teacher engines: HF vs vLLM", result, f"model `{result['model']}`",
                               "the timings are contaminated (lower than on an idle machine) and only roughly "
                               "comparable between the backends.")
    lines += ["| backend | dtype | load (s) | labelling texts/s | paraphrasing texts/s | new tokens/s |",
              "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['load_s']} | {r['label_texts_per_s']} "
                     f"({r['label_texts']} texts) | {r['paraphrase_texts_per_s']} ({r['paraphrase_texts']} texts) | "
                     f"{r['paraphrase_new_tokens_per_s']} |")
    if "agreement" in result:
        a = result["agreement"]
        lines += ["", f"HF vs vLLM on the labelled texts: same argmax on {a['argmax_agreement']:.4f}, class "
                      f"log-probabilities differ by at most {a['max_abs_logprob_diff']:.2e} "
                      f"(mean {a['mean_abs_logprob_diff']:.2e})."]
    lines += ["", "Labelling: one forward pass per prompt (hf: batches of similar length; vLLM: its own scheduler, "
                  "prefix caching on, one decoding step returning the label tokens' log-probabilities). "
                  "Paraphrasing: `augment.generate_paraphrases` with the same prompts and sampling settings. "
                  "Load = model load (hf) or engine start-up (vLLM), not in the texts/s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import tempfile

    import numpy as np

    from findistill.config import DataConfig
    from findistill.data.splits import load_splits
    from findistill.io import atomic_write_json, atomic_write_text

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    wall = time.perf_counter()
    load_start = os.getloadavg()
    splits = load_splits(DataConfig(max_dev_examples=args.n_label), tfns_data_dir(args.data_dir))
    label_texts = splits.dev.texts[: args.n_label]
    para_texts = splits.train.texts[: args.n_paraphrase]
    rows, logits = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            print(f"[bench_engines] {backend}", flush=True)
            row, logits[backend] = run_backend(backend, args, label_texts, para_texts, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    info = machine_info()
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError:
        info["vllm"] = None
    load_end = os.getloadavg()
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_engines.py " + " ".join(shlex.quote(a) for a in argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - wall, 1),
        "model": args.model, "machine": info, "rows": rows,
        "loadavg_start": list(load_start), "loadavg_end": list(load_end),
        # Before our own work starts, anything above ~half a core per core is somebody else's.
        "cores_shared": bool(load_start[0] > 0.5 * cores),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if "hf" in logits and "vllm" in logits:
        a, b = logits["hf"], logits["vllm"]
        diff = np.abs(a - b)
        result["agreement"] = {"argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
                               "max_abs_logprob_diff": float(diff.max()), "mean_abs_logprob_diff": float(diff.mean())}
    out = Path(args.out)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "report.md", render(result))
    print(f"\nengine report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
