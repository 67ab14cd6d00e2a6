"""train.save_steps / save_total_limit / trainer_kwargs: a `findistill run` killed with SIGKILL mid-training resumes
from its last checkpoint and ends with the results of an uninterrupted run; TrainingArguments pass-through."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainingArguments

from findistill.__main__ import main
from findistill.config import TRAINER_OWNED_ARGUMENTS, ConfigError, StudentConfig, TrainConfig, load_config
from findistill.training.trainer import train_student, training_arguments
from test_pipeline import write_config
from test_trainer import _data, _train_cfg

# Runs `findistill run` with every training micro-batch slowed by FINDISTILL_TEST_STEP_DELAY seconds (so that the
# parent can kill it mid-training) and prints how many micro-batches it trained. Nothing else is changed.
_RUNNER = """
import atexit, os, sys, time
from findistill.training import trainer
delay, count = float(os.environ["FINDISTILL_TEST_STEP_DELAY"]), [0]
original = trainer.DistillationTrainer.training_step
def training_step(self, *args, **kwargs):
    count[0] += 1
    time.sleep(delay)
    return original(self, *args, **kwargs)
trainer.DistillationTrainer.training_step = training_step
atexit.register(lambda: print(f"TRAINED_MICRO_BATCHES {count[0]}", flush=True))
from findistill.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

# 48 training rows / batch 8 = 6 steps an epoch, 3 epochs: 18 steps per student; dev scored every 4 steps and the
# last; resumable checkpoints every 3 steps. LoRA dropout (0.05) makes the result depend on the restored RNG state.
_TRAIN = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2, "selection": "steps",
          "selection_steps": 4, "save_steps": 3, "save_total_limit": 2}
_STEPS = 18


def _command(config: Path, out: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-c", _RUNNER, "run", str(config), "--out", str(out), "--data-dir", str(data_dir)]


def _env(delay: float) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "FINDISTILL_TEST_STEP_DELAY": str(delay), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _complete_checkpoints(folder: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in folder.glob("checkpoint-*/trainer_state.json"))


@pytest.mark.slow
def test_sigkill_mid_training_resumes_to_the_same_results(tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir):
    config = write_config(tmp_path / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir, train=_TRAIN)
    reference = tmp_path / "reference"
    assert main(["run", str(config), "--out", str(reference), "--data-dir", str(tiny_tfns_dir)]) == 0

    out = tmp_path / "killed"
    scratch = out / ".train_student_ce"  # the first student trained
    child = subprocess.Popen(_command(config, out, tiny_tfns_dir), env=_env(0.4), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not _complete_checkpoints(scratch) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    output = child.communicate()[0].decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{output[-3000:]}"
    done = _complete_checkpoints(scratch)
    assert done and done[-1] < _STEPS, "killed mid-training, after a checkpoint"
    assert not (out / "student_ce" / "config.json").exists()
    # A kill during a save leaves a checkpoint without trainer_state.json: it must be ignored and removed.
    (scratch / f"checkpoint-{_STEPS - 1}").mkdir()

    rerun = subprocess.run(_command(config, out, tiny_tfns_dir), env=_env(0.0), capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    trained = int(rerun.stdout.rsplit("TRAINED_MICRO_BATCHES", 1)[1].split()[0])
    # student_ce resumed after its last checkpoint; the distilled student trained in full.
    assert trained == (_STEPS - done[-1]) + _STEPS
    assert not scratch.exists(), "checkpoints are deleted once training ends"

    for role in ("student_ce", "student_distilled"):
        ref, got = np.load(reference / "predictions" / f"{role}.npz"), np.load(out / "predictions" / f"{role}.npz")
        np.testing.assert_allclose(got["logits"], ref["logits"], rtol=0, atol=1e-5, err_msg=role)
        ref_meta, got_meta = json.loads(str(ref["meta"])), json.loads(str(got["meta"]))
        assert got_meta["selected_step"] == ref_meta["selected_step"]
        assert got_meta["selected_dev_metric"] == pytest.approx(ref_meta["selected_dev_metric"], abs=1e-6)
    ref_rows = json.loads((reference / "results.json").read_text())["rows"]
    got_rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["role"], r["accuracy"], r["macro_f1"]) for r in got_rows] == [
        (r["role"], r["accuracy"], r["macro_f1"]) for r in ref_rows]


def test_leftovers_of_other_training_are_not_resumed(tmp_path, tiny_bert_dir):
    texts, labels, logits = _data()
    student = StudentConfig(model=str(tiny_bert_dir), method="full", max_length=16)
    stale = tmp_path / "run" / "checkpoint-3"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    res = train_student(student, _train_cfg(max_steps=4, save_steps=2), texts, labels, logits, tmp_path / "run")
    assert res.steps == 4 and not (tmp_path / "run").exists()
    assert sum("loss" in h for h in res.log_history) == 4, "trained from step 0, not from the stale checkpoint"


def test_trainer_kwargs_pass_through_and_override_the_plain_defaults(tmp_path):
    cfg = _train_cfg(trainer_kwargs={"max_grad_norm": 0.25, "dataloader_num_workers": 1, "logging_first_step": True})
    args = training_arguments(cfg, tmp_path)
    assert (args.max_grad_norm, args.dataloader_num_workers, args.logging_first_step) == (0.25, 1, True)
    assert training_arguments(_train_cfg(), tmp_path).dataloader_num_workers == 0


def test_trainer_kwargs_errors_are_one_line_naming_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    for kwargs, key, words in [({"no_such_field": 1}, "train.trainer_kwargs.no_such_field", "unknown key"),
                               ({"learning_rate": 0.1}, "train.trainer_kwargs.learning_rate", "train.learning_rate"),
                               ({"bf16": True}, "train.trainer_kwargs.bf16", "train.precision"),
                               ({"save_steps": 5}, "train.trainer_kwargs.save_steps", "train.save_steps")]:
        config.write_text(json.dumps({"train": {"trainer_kwargs": kwargs}}))
        with pytest.raises(ConfigError) as err:
            load_config(config)
        assert err.value.key == key and words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # a value TrainingArguments refuses, found when it is built
        training_arguments(_train_cfg(trainer_kwargs={"optim": "no-such-optimizer"}), tmp_path)
    assert str(err.value).startswith("train.trainer_kwargs: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    dict(selection="steps", save_steps=3, precision="bf16"),
    dict(selection="epoch", save_steps=None, precision="fp32"),
    dict(selection="none", save_steps=2, save_total_limit=3),
])
def test_every_field_findistill_sets_is_listed_as_owned(tmp_path, overrides):
    """A field training_arguments sets must be refused in trainer_kwargs (or be one of the documented defaults)."""
    args = training_arguments(TrainConfig(**overrides), tmp_path, select_on_dev=True)
    default = TrainingArguments(output_dir=str(tmp_path / "other"))
    changed = {f.name for f in dataclasses.fields(TrainingArguments)
               if f.init and getattr(args, f.name) != getattr(default, f.name)}
    derived = {"do_eval", "dataloader_pin_memory"}  # TrainingArguments derives these from eval_strategy / use_cpu
    plain_defaults = {"report_to", "dataloader_num_workers", "use_cpu"}
    assert changed - derived - plain_defaults <= set(TRAINER_OWNED_ARGUMENTS)
    assert set(TRAINER_OWNED_ARGUMENTS) <= {f.name for f in dataclasses.fields(TrainingArguments)}


def test_teacher_finetune_takes_trainer_kwargs_checked_like_the_students(tmp_path):
    from findistill.config import TeacherConfig, TeacherFinetuneConfig
    from findistill.training.teacher_finetune import _train_config

    ft = TeacherFinetuneConfig(enabled=True, method="head", trainer_kwargs={"train_sampling_strategy": "group_by_length"})
    cfg = TeacherConfig(kind="classifier", model="m", finetune=ft)
    args = training_arguments(_train_config(cfg, n_train=100, seed=0), tmp_path)
    assert args.train_sampling_strategy == "group_by_length"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"teacher": {"finetune": {"trainer_kwargs": {"num_train_epochs": 3}}}}))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert err.value.key == "teacher.finetune.trainer_kwargs.num_train_epochs" and "\n" not in str(err.value)
