"""Load test of ``findistill serve`` on loopback, driven by ``wrk`` (a native load generator) and, as a second
measurement, by a Python client (httpx async).

    python benchmarks/bench_serve_load.py MODEL_DIR [--client both|wrk|python] [--connections 50] [--duration 30]

Starts the server as a subprocess on 127.0.0.1 (a free port) and waits for /health. Then, per client:

* ``wrk``: 1 thread, ``--connections`` connections, ``--duration`` seconds, a Lua script that POSTs one JSON body
  ``{"texts": [one tweet]}`` per request (cycling through synthetic tweets) and prints wrk's summary as JSON
  (requests, errors, latency percentiles). Debian package ``wrk``.
* ``python``: ``--connections`` concurrent httpx clients × ``--requests`` requests each (capped by
  ``--max-seconds``). A Python client on the same 2 cores competes with the server for CPU and measures itself as
  much as the server, which is why ``wrk`` is the headline figure.

Around each run it reads the micro-batcher's counters from /health (requests, batches, texts: how well requests
merged), stops the server and writes ``results.json`` + ``report.md`` (client, throughput, p50/p90/p99 latency,
errors, server batches, machine, command, date) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_deploy import synthetic_texts  # noqa: E402
from findistill.machine import machine_info  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "findistill.deploy.serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--batch-window-ms", str(args.batch_window_ms), "--max-batch", str(args.max_batch),
           "--max-texts", str(max(64, args.texts_per_request)), "--workers", str(getattr(args, "workers", 1))]
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
            **{f"latency_ms_p{q}": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)}}


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


WRK_LUA = """-- generated by benchmarks/bench_serve_load.py: one tweet per POST, cycling through the bodies
local bodies = {
%(bodies)s
}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/predict", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "FINDISTILL_WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"bytes\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, " ..
    "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, " ..
    "\\"mean_us\\": %%.1f, \\"max_us\\": %%d}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def write_wrk_script(folder: Path, texts: list[str], per_request: int) -> Path:
    """The Lua script: POST ``{"texts": [...]}`` bodies of ``per_request`` texts, one body per request."""
    bodies = [json.dumps({"texts": texts[i:i + per_request]}) for i in range(0, len(texts) - per_request + 1,
                                                                             per_request)]
    path = folder / "post.lua"
    path.write_text(WRK_LUA % {"bodies": ",\n".join("  " + _lua_string(b) for b in bodies)})
    return path


def run_wrk(url: str, texts: list[str], connections: int, duration_s: float, per_request: int,
            timeout_s: float) -> dict[str, Any]:
    """One wrk run (1 thread) against ``url``/predict; wrk's own summary as a dict."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk), or use --client python")
    with tempfile.TemporaryDirectory() as tmp:
        script = write_wrk_script(Path(tmp), texts, per_request)
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", f"--timeout={max(1, round(timeout_s))}s",
               "-s", str(script), f"{url}/predict"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FINDISTILL_WRK ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    w = json.loads(line.split(" ", 1)[1])
    wall = w["duration_us"] / 1e6
    errors = {k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]}
    ok = w["requests"] - w["status"]
    return {"client": "wrk", "command": " ".join(["wrk", *cmd[1:-2], "post.lua", cmd[-1]]), "wall_s": wall,
            "ok": ok, "errors": sum(errors.values()), "error_kinds": errors, "requests_per_s": ok / wall,
            "texts_per_s": ok * per_request / wall, "latency_ms_p50": w["p50_us"] / 1000,
            "latency_ms_p90": w["p90_us"] / 1000, "latency_ms_p99": w["p99_us"] / 1000,
            "latency_ms_mean": w["mean_us"] / 1000, "latency_ms_max": w["max_us"] / 1000,
            "connections": connections, "threads": 1, "wrk_version": _wrk_version(wrk)}


def _wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]


def export_accuracy(model_dir: Path) -> dict[str, Any] | None:
    """The variant's accuracy from ``findistill export``'s report beside it (``<export>/export_report.json``)."""
    report = model_dir.resolve().parent / "export_report.json"
    if not report.is_file():
        return None
    doc = json.loads(report.read_text())
    row = doc.get("variants", {}).get(model_dir.resolve().name)
    if not row:
        return None
    return {"accuracy": row["accuracy"], "macro_f1": row["macro_f1"], "n": doc["eval"]["n"],
            "file": doc["eval"]["file"], "source": doc["source"]}


def predict_rate(model_dir: str, path: str) -> dict[str, Any]:
    """texts/s of ``findistill predict``'s classifier on ``path`` (best of 3 calls, the model already loaded)."""
    from findistill.deploy.predict import read_rows
    from findistill.deploy.runtime import load_classifier

    texts = [row["text"] for row in read_rows(path)]
    clf = load_classifier(model_dir)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        clf.predict_proba(texts)
        seconds.append(time.perf_counter() - start)
    return {"file": path, "n": len(texts), "texts_per_s": len(texts) / min(seconds), "seconds": seconds}


def _stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=10).json()["stats"]


def _server_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {k: after[k] - before.get(k, 0) for k in ("requests", "batches", "texts", "inference_seconds") if k in after}
    out["largest_batch_so_far"] = after.get("largest_batch")
    out["mean_texts_per_batch"] = out.get("texts", 0) / max(1, out.get("batches", 0))
    return out


# The serving issue's targets for the wrk run (50 connections, one text per request).
TARGETS = {"requests_per_s": 1500.0, "latency_ms_p99": 100.0}


def target_status(run: dict[str, Any]) -> dict[str, str]:
    rps, p99 = run["requests_per_s"], run["latency_ms_p99"]
    return {"requests_per_s": f"{'met' if rps >= TARGETS['requests_per_s'] else 'missed'} "
                              f"({rps:,.0f} vs >= {TARGETS['requests_per_s']:,.0f})",
            "latency_ms_p99": f"{'met' if p99 <= TARGETS['latency_ms_p99'] else 'missed'} "
                              f"({p99:.0f} ms vs <= {TARGETS['latency_ms_p99']:.0f} ms)"}


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# Serve load test", "", f"{res['date']} · `{res['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
        f"Server and load generator share this machine (loopback).", "",
        f"Model `{res['model']}` ({res['variant']}); {res['connections']} concurrent connections, "
        f"{res['texts_per_request']} text(s) per request; batch window {res['batch_window_ms']} ms, max batch "
        f"{res['max_batch']}, {res.get('workers', 1)} server process(es)." + (f" Its accuracy on {res['accuracy']['n']:,} texts of `{res['accuracy']['file']}`: "
                                  f"{res['accuracy']['accuracy']:.4f} (macro-F1 {res['accuracy']['macro_f1']:.4f}; "
                                  "from the export report beside it)." if res.get("accuracy") else ""),
        f"Model folder: `{res['model_dir']}`.", "",
        "| client | requests/s | texts/s | p50 (ms) | p90 (ms) | p99 (ms) | errors | server batches | "
        "mean texts/batch | share of wall time in inference |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in res["runs"]:
        s = run["server_metrics"]
        lines.append(f"| {run['client']} | {run['requests_per_s']:,.1f} | {run['texts_per_s']:,.1f} | "
                     f"{run['latency_ms_p50']:.1f} | {run['latency_ms_p90']:.1f} | {run['latency_ms_p99']:.1f} | "
                     f"{run['errors']} | {s.get('batches', '–')} | {s['mean_texts_per_batch']:.1f} | "
                     + (f"{s['inference_seconds'] / run['wall_s']:.0%} |" if "inference_seconds" in s else "– |"))
    lines += [""]
    for run in res["runs"]:
        if run.get("targets"):
            lines += [f"Targets ({run['client']}): requests/s {run['targets']['requests_per_s']}; p99 "
                      f"{run['targets']['latency_ms_p99']}.", ""]
    if res.get("predict"):
        rate = res["predict"]["texts_per_s"]
        lines += [f"`findistill predict`'s classifier on the {res['predict']['n']:,} texts of `{res['predict']['file']}` "
                  f"(best of 3, model loaded, same machine, before the server started): {rate:,.0f} texts/s. Served "
                  "over offline: " + ", ".join(f"{run['client']} {run['texts_per_s'] / rate:.2f}" for run in res["runs"])
                  + ".", ""]
    for run in res["runs"]:
        if run["client"] == "wrk":
            lines.append(f"wrk: `{run['command']}` ({run['wrk_version']}), {run['wall_s']:.1f} s.")
        else:
            lines.append(f"python: httpx async, {run['clients']} clients × {run['requests_per_client']} requests, "
                         f"{run['wall_s']:.1f} s; it runs on the same cores as the server, so it measures "
                         "itself too.")
    return "\n".join(lines + [""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="any variant folder findistill serve accepts")
    p.add_argument("--client", choices=("both", "wrk", "python"), default="both",
                   help="load generator(s): wrk (native, the headline figure) and/or the Python httpx client")
    p.add_argument("--connections", "--clients", dest="clients", type=int, default=50,
                   help="concurrent connections (wrk) / clients (python)")
    p.add_argument("--duration", type=float, default=30.0, help="wrk run length (s)")
    p.add_argument("--requests", type=int, default=20, help="requests per Python client")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="findistill serve --workers")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="cap on the whole load phase")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load"))
    p.add_argument("--predict-file", default=None,
                   help="also time findistill predict's classifier on this file's texts (best of 3, model loaded, "
                        "before the server starts) and report served texts/s over it")
    args = p.parse_args(argv)

    offline = predict_rate(args.model_dir, args.predict_file) if args.predict_file else None
    port = free_port()
    texts = synthetic_texts(2000)
    try:
        proc = start_server(args.model_dir, port, args)
    except RuntimeError as err:
        print(f"bench_serve_load: error: {err}", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{port}"
    runs = []
    try:
        health = httpx.get(f"{url}/health", timeout=10).json()
        httpx.post(f"{url}/predict", json={"texts": texts[:args.texts_per_request]}, timeout=args.timeout)  # warm-up
        if args.client in ("both", "wrk"):
            before = _stats(url)
            load = run_wrk(url, texts, args.clients, args.duration, args.texts_per_request, args.timeout)
            runs.append({**load, "server_metrics": _server_delta(before, _stats(url))})
            runs[-1]["targets"] = target_status(runs[-1])
        if args.client in ("both", "python"):
            before = _stats(url)
            load = asyncio.run(run_load(url, texts, args.clients, args.requests, args.texts_per_request,
                                        args.timeout, args.max_seconds))
            runs.append({"client": "python", "clients": args.clients, "requests_per_client": args.requests, **load,
                         "server_metrics": _server_delta(before, _stats(url))})
    except RuntimeError as err:
        print(f"bench_serve_load: error: {err}", file=sys.stderr)
        return 2
    finally:
        stop_server(proc)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
           "model": health["model"], "variant": health["variant"], "model_dir": str(Path(args.model_dir).resolve()),
           "accuracy": export_accuracy(Path(args.model_dir)), "predict": offline, "connections": args.clients, "texts_per_request": args.texts_per_request,
           "batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch, "workers": args.workers, "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "report.md").write_text(render(res))
    print(render(res))
    return 0 if all(run["errors"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
