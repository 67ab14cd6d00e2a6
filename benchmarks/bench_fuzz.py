"""Fuzz ``findistill serve`` from its own OpenAPI schema with Schemathesis, many more cases than the test suite's run.

    python benchmarks/bench_fuzz.py MODEL_DIR [--max-examples 1000] [--seed 1] [--out benchmarks/results/fuzz]

Starts the server as a subprocess on a free loopback port, runs ``schemathesis run <server>/openapi.json --checks
all`` (every operation and check: no 5xx, responses as the schema says, bad input refused with 400 / 413 / 422, good
input accepted), checks that the server still answers afterwards, and writes ``results.json`` + ``report.md``: cases
generated, failures, the operations tested, command, machine, date and wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from findistill.machine import machine_info  # noqa: E402
from bench_serve_load import free_port, start_server, stop_server  # noqa: E402

# Bad input is refused with 400 (malformed JSON), 413 (over a documented limit) or 422 (schema).
CONFIG = '[checks.negative_data_rejection]\nexpected-statuses = ["400", "413", "422"]\n'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--max-examples", type=int, default=1000, help="cases per operation and phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz"))
    args = p.parse_args(argv)
    server_args = argparse.Namespace(batch_window_ms=5.0, max_batch=64, texts_per_request=1, startup_timeout=180.0)
    port = free_port()
    proc = start_server(args.model_dir, port, server_args)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, junit = Path(tmp) / "schemathesis.toml", Path(tmp) / "junit.xml"
            config.write_text(CONFIG)
            cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
                   f"{url}/openapi.json", "--checks", "all", "--max-examples", str(args.max_examples), "--seed",
                   str(args.seed), "--report", "junit", "--report-junit-path", str(junit), "--no-color"]
            run = subprocess.run(cmd, capture_output=True, text=True)
            cases = [(c.get("name"), c.find("failure") is None and c.find("error") is None)
                     for c in ET.parse(junit).getroot().iter("testcase")] if junit.is_file() else []
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        stop_server(proc)
    generated = re.search(r"(\d+) generated", run.stdout)
    failures = re.search(r"(\d+) unique failures?", run.stdout)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
           "model_dir": str(Path(args.model_dir).resolve()), "schemathesis_exit_code": run.returncode,
           "cases_generated": int(generated.group(1)) if generated else None,
           "unique_failures": int(failures.group(1)) if failures else 0,
           "operations": {name: "passed" if ok else "failed" for name, ok in cases},
           "server_healthy_afterwards": healthy, "wall_s": round(time.monotonic() - started, 1),
           "output_tail": run.stdout[-4000:]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    report = "\n".join([
        "# Schemathesis fuzzing of findistill serve", "", f"{res['date']} · `{res['command']}` · {res['wall_s']} s", "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Model folder: `{res['model_dir']}`.", "",
        f"Cases generated: {res['cases_generated']}; unique failures: {res['unique_failures']}; operations: "
        + ", ".join(f"{k} {v}" for k, v in res["operations"].items())
        + f"; server healthy afterwards: {'yes' if healthy else 'NO'}; schemathesis exit code {run.returncode}.", ""])
    (out / "report.md").write_text(report)
    print(report)
    return 0 if run.returncode == 0 and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
