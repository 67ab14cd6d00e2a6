"""Teacher labelling throughput (texts/s) with 1 and 2 processes: `findistill label` alone and under `accelerate
launch`, on the same N TFNS training tweets, the same teacher and the same cores.

Each process count K labels into a fresh run folder: K = 1 is plain ``findistill label``; K > 1 is ``accelerate
launch --multi_gpu --num_processes K -m findistill label`` (torchrun underneath; on a machine without CUDA the K
processes run on the CPU and meet over gloo). Every process gets ``cores // K`` threads, so each K uses the same
cores. The time is the wall time of the whole command (interpreter start, model load and labelling), so texts/s
includes the start-up, which weighs less as N grows. The K runs must write the same cache (same chunk files, logits
to 1e-5); the report says whether they did.

    python benchmarks/bench_label_scaling.py                                 # N = 2000, K = 1, 2 (idle machine!)
    python benchmarks/bench_label_scaling.py --n 16 --chunk-size 4 --out /tmp/label_scaling   # a dry run

Output: ``<out>/results.json`` and ``<out>/report.md`` (command, machine, date, wall time, load average at the start
and the end: above ~0.5 per core other processes shared the cores, and the report says so).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir, timing_report_head  # noqa: E402
from findistill.machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_label_scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="prompted teacher (a model reference)")
    p.add_argument("--n", type=int, default=2000, help="TFNS training tweets labelled")
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--chunk-size", type=int, default=100, help="cache.chunk_size: the unit split between processes")
    p.add_argument("--batch-size", type=int, default=32, help="teacher.batch_size")
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_scaling"))
    return p.parse_args(argv)


def write_config(path: Path, args: argparse.Namespace) -> Path:
    """A run config whose label stage labels exactly ``args.n`` training tweets (no evaluation, no transfer set)."""
    import yaml

    config = {"name": "label-scaling", "evaluate_teacher": False,
              "data": {"max_train_examples": args.n},
              "teacher": {"kind": "prompted_lm", "model": args.model, "few_shot": 0, "batch_size": args.batch_size},
              "cache": {"chunk_size": args.chunk_size}}
    path.write_text(yaml.safe_dump(config))
    return path


def label_command(processes: int, config: Path, out: Path, data_dir: str | None) -> list[str]:
    """``findistill label`` in one process, or under ``accelerate launch`` with ``processes`` processes."""
    findistill = ["-m", "findistill", "label", str(config), "--out", str(out)]
    findistill += ["--data-dir", data_dir] if data_dir else []
    if processes == 1:
        return [sys.executable, *findistill]
    with socket.socket() as sock:  # a free rendezvous port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(port), *findistill]


def cache_logits(folder: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return {p.name: load_file(p)["logits"] for p in (folder / "cache").glob("*.safetensors")}


def same_cache(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import numpy as np

    return set(a) == set(b) and all(np.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)


def render(result: dict[str, Any]) -> str:
    lines = timing_report_head("Teacher labelling: 1 vs N processes", result,
                               f"teacher `{result['model']}` · {result['n']} TFNS training tweets, chunks of "
                               f"{result['chunk_size']}", "the timings are contaminated and only roughly comparable "
                               "between the process counts.")
    lines += ["| processes | threads each | wall time (s) | texts/s | speed-up | same cache as 1 process |",
              "|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['processes']} | {r['threads_per_process']} | {r['wall_s']} | {r['texts_per_s']} | "
                     f"{r['speedup']} | {'yes' if r['same_cache'] else 'NO'} |")
    lines += ["", "Wall time of the whole command: interpreter start, teacher load and labelling (the start-up "
                  "is paid once per process).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from findistill.io import atomic_write_json, atomic_write_text

    counts = [int(k) for k in args.processes.split(",") if k.strip()]
    cores = os.cpu_count() or 1
    data_dir = tfns_data_dir(args.data_dir)
    wall = time.perf_counter()
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "label.yaml", args)
        caches = []
        for k in counts:
            out = Path(tmp) / f"run-{k}"
            threads = max(1, cores // k)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            command = label_command(k, config, out, data_dir)
            print(f"[bench_label_scaling] {k} process(es): {shlex.join(command)}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                print((proc.stdout + proc.stderr)[-3000:], file=sys.stderr)
                print(f"bench_label_scaling: error: {k} process(es) exited with {proc.returncode}", file=sys.stderr)
                return 1
            caches.append(cache_logits(out))
            rows.append({"processes": k, "threads_per_process": threads, "wall_s": round(seconds, 1),
                         "texts_per_s": round(args.n / seconds, 2), "chunks": len(caches[-1]),
                         "same_cache": same_cache(caches[0], caches[-1])})
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row["speedup"] = round(row["texts_per_s"] / rows[0]["texts_per_s"], 2)
    load_end = os.getloadavg()
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_label_scaling.py " + shlex.join(argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - wall, 1),
        "model": args.model, "n": args.n, "chunk_size": args.chunk_size, "machine": machine_info(), "rows": rows,
        "loadavg_start": list(load_start), "loadavg_end": list(load_end),
        "cores_shared": bool(load_start[0] > 0.5 * cores),
    }
    out = Path(args.out)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "report.md", render(result))
    print(f"\nlabel scaling report: {out / 'report.md'}")
    return 0 if all(r["same_cache"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
