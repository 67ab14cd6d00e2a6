"""kill -9 in the middle of labelling: the same `findistill label` command resumes, keeps every finished chunk (not
relabelled, byte for byte) and ends with exactly the cache of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
import yaml

from test_pipeline import write_config

# `findistill label` with every teacher call slowed by FINDISTILL_TEST_CALL_DELAY seconds (so that the parent can
# kill it between chunks); prints how many texts the teacher labelled. The labelling code itself is unchanged.
_RUNNER = """
import atexit, os, sys, time
import findistill.teachers as teacher
delay, count = float(os.environ["FINDISTILL_TEST_CALL_DELAY"]), [0]
original = teacher.PromptedLMTeacher.class_logits
def class_logits(self, texts, *args, **kwargs):
    count[0] += len(texts)
    time.sleep(delay)
    return original(self, texts, *args, **kwargs)
teacher.PromptedLMTeacher.class_logits = class_logits
atexit.register(lambda: print(f"TEACHER_TEXTS {count[0]}", flush=True))
from findistill.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

pytestmark = pytest.mark.slow  # kill -9 and resume in subprocesses


def _label(config: Path, out: Path, data_dir: Path, delay: float) -> tuple[subprocess.Popen, Path]:
    """Start the command; its output goes to a file next to ``out`` (a pipe could fill up and stall it)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "FINDISTILL_TEST_CALL_DELAY": str(delay), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    log = out.with_name(f"{out.name}-{time.monotonic_ns()}.log")
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", _RUNNER, "label", str(config), "--out", str(out),
                                 "--data-dir", str(data_dir)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc, log


def _chunks(out: Path) -> dict[str, tuple[int, int, np.ndarray]]:
    """chunk file name -> (mtime_ns, texts in it, logits)."""
    chunks = {}
    for path in sorted((out / "cache").glob("*.safetensors")):
        with safe_open(str(path), framework="np") as fh:
            chunks[path.name] = (path.stat().st_mtime_ns, int(fh.metadata()["n"]), fh.get_tensor("logits"))
    return chunks


def _texts_labelled(output: str) -> int:
    return int(output.rsplit("TEACHER_TEXTS", 1)[1].split()[0])


def test_kill_9_mid_labelling_resumes_without_relabelling_finished_chunks(tmp_path, tiny_llama_dir, tiny_bloom_dir,
                                                                           tiny_tfns_dir):
    config = write_config(tmp_path / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir)
    raw = yaml.safe_load(config.read_text())
    raw["cache"] = {"chunk_size": 4}  # 48 train + 12 dev + 24 eval texts: 21 chunks
    config.write_text(yaml.safe_dump(raw))

    reference, log = _label(config, tmp_path / "reference", tiny_tfns_dir, delay=0.0)
    assert reference.wait(timeout=600) == 0, log.read_text()
    total = _texts_labelled(log.read_text())
    full = _chunks(tmp_path / "reference")
    assert sum(n for _, n, _ in full.values()) == total and len(full) > 10

    out = tmp_path / "run"
    killed, log = _label(config, out, tiny_tfns_dir, delay=0.4)
    deadline = time.monotonic() + 300
    while len(_chunks(out) if (out / "cache").is_dir() else {}) < 3:
        assert killed.poll() is None, "labelling ended before it could be killed: " + log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    before = _chunks(out)
    assert 3 <= len(before) < len(full), "killed mid-labelling"

    resumed, log = _label(config, out, tiny_tfns_dir, delay=0.0)
    assert resumed.wait(timeout=600) == 0, log.read_text()
    output = log.read_text()
    after = _chunks(out)
    assert set(after) == set(full)
    for name, (mtime, n, logits) in before.items():
        assert after[name][0] == mtime, f"finished chunk {name} was written again"
    assert _texts_labelled(output) == total - sum(n for _, n, _ in before.values()), "only unfinished chunks labelled"
    for name, (_, n, logits) in full.items():
        np.testing.assert_allclose(after[name][2], logits, rtol=0, atol=1e-5)
