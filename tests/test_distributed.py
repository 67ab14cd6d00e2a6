"""`accelerate launch` with 2 real CPU processes (gloo) against one process: `findistill run` and `teacher-finetune`
on the tiny random models.

`accelerate launch --cpu` starts one process (several need mpirun); `--multi_gpu` starts N through torchrun, and
with CUDA hidden every process runs on the CPU and meets the others over gloo (findistill.distributed).

What must be the same, and why the trained weights are compared with a tolerance: the teacher's logits do not
depend on how the chunks are split between processes, so the cache is the same to the bit. Training under DDP with
`train.batch_size: 4` on 2 processes sees the same global batches as one process with `batch_size: 8` (accelerate
hands process k batch k of each consecutive pair, from the same seeded order) and averages the two halves'
gradients, which for equal halves with gold labels is the gradient of the 8-row mean. What differs is rounding:
padding to the longest text of 4 rows instead of 8, and the order of the all-reduce sum; hence 1e-4 on logits and
weights (measured: about 1e-8) with the same argmax and metrics. LoRA dropout is 0 here, because each process
draws its own dropout masks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from findistill.__main__ import main
from test_pipeline import write_config as write_run_config
from test_teacher_finetune import write_config as write_finetune_config

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # trained weights and logits, see the module docstring


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(*args: str) -> str:
    """``accelerate launch`` 2 CPU processes of ``findistill ARGS``; returns their output (the test fails on rc != 0)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "findistill", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _logits(out: Path, role: str) -> np.ndarray:
    with np.load(out / "predictions" / f"{role}.npz") as data:
        return data["logits"]


def test_two_processes_run_gives_the_results_of_one(tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir):
    config = write_run_config(tmp_path / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir,
                              student={"lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    one, two = tmp_path / "one", tmp_path / "two"
    # chunks of 8: the 48 training texts are 6 chunks, 3 per process
    args = [str(config), "--data-dir", str(tiny_tfns_dir), "--set", "cache.chunk_size=8"]
    assert main(["run", *args, "--out", str(one)]) == 0
    output = launch_two("run", *args, "--out", str(two), "--set", "train.batch_size=4")

    # the labelling was split (the main process wrote 3 of the 6 training chunks) and logged once
    assert "[label] 3 chunks of train labelled or found here" in output
    assert output.count("[label] runs: no output yet") == 1
    # the same files, none left half-written or written twice under another name
    assert _files(two) == _files(one)
    assert json.loads((two / "data.json").read_text()) == json.loads((one / "data.json").read_text())
    cache_one = {p.name: load_file(p)["logits"] for p in (one / "cache").glob("*.safetensors")}
    cache_two = {p.name: load_file(p)["logits"] for p in (two / "cache").glob("*.safetensors")}
    assert set(cache_two) == set(cache_one) and len(cache_one) >= 3 + 6  # eval, train chunks (+ the analysis texts)
    for name, logits in cache_one.items():
        np.testing.assert_allclose(cache_two[name], logits, atol=1e-5, rtol=0)
    for role in ("teacher", "student_baseline"):  # not trained: the same computation
        np.testing.assert_allclose(_logits(two, role), _logits(one, role), atol=1e-5, rtol=0)
    for role in ("student_ce", "student_distilled"):  # trained under DDP: see the module docstring
        a, b = _logits(one, role), _logits(two, role)
        np.testing.assert_allclose(b, a, atol=TOLERANCE, rtol=0)
        assert (a.argmax(1) == b.argmax(1)).all()

    rows_one = {r["role"]: r for r in json.loads((one / "results.json").read_text())["rows"]}
    rows_two = {r["role"]: r for r in json.loads((two / "results.json").read_text())["rows"]}
    assert set(rows_two) == set(rows_one)
    for role, row in rows_one.items():
        assert (rows_two[role]["accuracy"], rows_two[role]["macro_f1"]) == (row["accuracy"], row["macro_f1"])
    # 48 rows in global batches of 8: 6 optimizer steps in both (one process alone with batches of 4 takes 12)
    assert rows_two["student_distilled"]["train_steps"] == rows_one["student_distilled"]["train_steps"] == 6
    stages = json.loads((two / "stages.json").read_text())["stages"]
    assert all(record["finished"] for record in stages.values()) and "student_distilled" in stages


def test_two_processes_teacher_finetune_trains_the_teacher_of_one(tmp_path, tiny_llama_dir, tiny_bert_dir,
                                                                  tiny_tfns_dir):
    config = write_finetune_config(tmp_path / "ft.yaml", tiny_llama_dir, tiny_bert_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    args = [str(config), "--data-dir", str(tiny_tfns_dir), "--set", "teacher.finetune.lora.dropout=0"]
    assert main(["teacher-finetune", *args, "--out", str(one)]) == 0
    output = launch_two("teacher-finetune", *args, "--out", str(two), "--set", "teacher.finetune.batch_size=4")

    assert output.count("fine-tuned teacher:") == 1  # printed by the main process only
    assert _files(two) == _files(one)
    summary_one = json.loads((one / "teacher" / "finetune_summary.json").read_text())
    summary_two = json.loads((two / "teacher" / "finetune_summary.json").read_text())
    assert summary_two["steps"] == summary_one["steps"] == 6  # 48 rows, global batches of 8
    assert [(h["accuracy"], h["macro_f1"]) for h in summary_two["history"]] == [
        (h["accuracy"], h["macro_f1"]) for h in summary_one["history"]]
    weights_one = load_file(one / "teacher" / "model.safetensors")
    weights_two = load_file(two / "teacher" / "model.safetensors")
    assert set(weights_two) == set(weights_one)
    for name, tensor in weights_one.items():
        np.testing.assert_allclose(weights_two[name], tensor, atol=TOLERANCE, rtol=0, err_msg=name)

