"""Load test of ``findistill serve`` on loopback: C concurrent clients × R requests each (httpx async).

    python benchmarks/bench_serve_load.py MODEL_DIR [--clients 50] [--requests 20] [--texts-per-request 1]

Starts the server as a subprocess on 127.0.0.1 (a free port), waits for /health, runs the load, reads /metrics
(how many batches the micro-batcher ran), stops the server and writes ``results.json`` + ``report.md`` (throughput,
p50/p95/p99 latency, error count, machine, command, date) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_deploy import synthetic_texts  # noqa: E402
from bench_machine import machine_info  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "findistill.serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--batch-window-ms", str(args.batch_window_ms), "--max-batch", str(args.max_batch),
           "--max-texts", str(max(64, args.texts_per_request))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {(proc.stderr.read() or '').strip()[-500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server did not answer /health within {args.startup_timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def run_load(url: str, texts: list[str], clients: int, requests: int, per_request: int,
                   timeout: float, deadline_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + deadline_s

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        for r in range(requests):
            if time.monotonic() > stop_at:
                errors["skipped (time cap)"] = errors.get("skipped (time cap)", 0) + requests - r
                return
            lo = ((cid * requests + r) * per_request) % max(1, len(texts) - per_request)
            t0 = time.perf_counter()
            try:
                resp = await http.post("/predict", json={"texts": texts[lo:lo + per_request]})
                ok = resp.status_code == 200 and len(resp.json()["predictions"]) == per_request
                key = None if ok else f"HTTP {resp.status_code}"
            except httpx.HTTPError as err:
                key = type(err).__name__
            if key is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        await http.post("/predict", json={"texts": texts[:per_request]})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"wall_s": wall, "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "requests_per_s": len(latencies) / wall, "texts_per_s": len(latencies) * per_request / wall,
            **{f"latency_ms_p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}}


def render(res: dict[str, Any]) -> str:
    m, r, s = res["machine"], res["load"], res["server_metrics"]
    return "\n".join([
        "# Serve load test", "", f"{res['date']} · `{res['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
        f"Server and clients share this machine (loopback).", "",
        f"Model `{res['model']}` ({res['variant']}); {res['clients']} clients × "
        f"{res['requests_per_client']} requests, "
        f"{res['texts_per_request']} text(s) per request; batch window {res['batch_window_ms']} ms, max batch "
        f"{res['max_batch']}.", "",
        "| requests/s | texts/s | p50 (ms) | p95 (ms) | p99 (ms) | errors | batches | mean texts/batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['requests_per_s']:,.1f} | {r['texts_per_s']:,.1f} | {r['latency_ms_p50']:.1f} | "
        f"{r['latency_ms_p95']:.1f} | {r['latency_ms_p99']:.1f} | {r['errors']} | {s.get('batches', '–')} | "
        f"{s.get('texts', 0) / max(1, s.get('batches', 0)):.1f} |", ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="any variant folder findistill serve accepts")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="cap on the whole load phase")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load"))
    args = p.parse_args(argv)

    port = free_port()
    texts = synthetic_texts(2000)
    try:
        proc = start_server(args.model_dir, port, args)
    except RuntimeError as err:
        print(f"bench_serve_load: error: {err}", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{url}/health", timeout=10).json()
        before = httpx.get(f"{url}/metrics", timeout=10).json()
        load = asyncio.run(run_load(url, texts, args.clients, args.requests, args.texts_per_request,
                                    args.timeout, args.max_seconds))
        after = httpx.get(f"{url}/metrics", timeout=10).json()
    finally:
        stop_server(proc)
    server = {k: after[k] - before.get(k, 0) for k in ("requests", "batches", "texts") if k in after}
    server["largest_batch"] = after.get("largest_batch")
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
           "model": health["model"], "variant": health["variant"], "model_dir": str(Path(args.model_dir).resolve()),
           "clients": args.clients, "requests_per_client": args.requests, "texts_per_request": args.texts_per_request,
           "batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch, "load": load,
           "server_metrics": server}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "report.md").write_text(render(res))
    print(render(res))
    return 0 if load["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
