"""The teacher health gate (a teacher that fails on dev stops the run before it labels anything) and the folder
lock (one command per run folder; a lock of a killed process never blocks)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from findistill.__main__ import main
from findistill.evaluation.metrics import health_check, health_problems, row_warnings
from findistill.io import LOCK_FILE

SRC = Path(__file__).resolve().parents[1] / "src"


def _biased_teacher(source: Path, folder: Path, bias: dict[str, float]) -> Path:
    """A copy of the tiny random classifier whose output biases force its answers (``{"Neutral": 50, ...}``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        for i, name in model.config.id2label.items():
            model.classifier.bias[int(i)] = bias.get(name, 0.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def _config(path: Path, teacher: Path, student: Path, **teacher_keys) -> Path:
    config = {
        "name": "gate",
        "data": {"dev_fraction": 0.2},
        "teacher": {"kind": "classifier", "model": str(teacher), "name": "biased-teacher", "batch_size": 16,
                    "max_length": 24, "label_map": {"Bearish": "negative", "Bullish": "positive",
                                                    "Neutral": "neutral"}, **teacher_keys},
        "student": {"model": str(student), "name": "tiny-bert", "method": "full", "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        "eval": {"bootstrap_samples": 100},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _errors(stderr: str) -> list[str]:
    """The error lines of a command's stderr (progress bars of model loading aside)."""
    return [line for line in stderr.splitlines() if line.startswith("findistill: error:")]


# ------------------------------------------------------------------------------------------------ pure parts


def test_health_problems_name_the_class_its_recall_and_its_confusion_row():
    # The teacher: 347 negative texts, 3 recognised, 279 called positive; neutral and positive fine.
    y = np.array([0] * 347 + [1] * 1566 + [2] * 475)
    pred = np.array([0] * 3 + [2] * 279 + [1] * 65 + [1] * 1500 + [2] * 66 + [2] * 400 + [1] * 75)
    logits = np.eye(3)[pred] * 5
    check = health_check(y, logits, train_labels=y)
    problems = health_problems(check, min_class_recall=0.2)
    assert problems == ["teacher rarely predicts 'negative' on dev (recall 0.01; 279 of 347 negative texts called "
                        "'positive')"]
    assert health_problems(check, min_class_recall=0.0) == []
    assert check["majority"] == {"class": "neutral", "accuracy": pytest.approx(1566 / 2388)}


def test_health_problems_flag_a_teacher_below_the_majority_class():
    y = np.array([1] * 6 + [0] * 2 + [2] * 2)  # neutral is the majority (0.6)
    pred = np.array([2] * 5 + [1] + [0, 2] + [2, 2])  # accuracy 0.4, every class predicted
    check = health_check(y, np.eye(3)[pred], train_labels=y)
    problems = health_problems(check, min_class_recall=0.1)
    assert len(problems) == 1 and "below the majority class on dev (accuracy 0.400 < 0.600 for always 'neutral')" \
        in problems[0]


def test_row_warnings_flag_a_class_never_predicted_and_a_model_below_majority():
    def row(role, acc, cm):
        return {"name": role, "role": role, "accuracy": acc, "confusion_matrix": cm}

    rows = [row("majority", 0.5, [[0, 2, 0], [0, 4, 0], [0, 2, 0]]),
            row("teacher", 0.625, [[0, 1, 1], [0, 4, 0], [0, 1, 1]]),          # never says negative
            row("student_baseline", 0.25, [[0, 0, 2], [0, 0, 4], [0, 0, 2]]),  # not checked: untrained
            row("student_distilled", 0.375, [[1, 1, 0], [1, 1, 2], [0, 1, 1]])]  # below majority
    assert row_warnings(rows) == ["teacher never predicts 'negative' on the evaluation split (2 negative texts)",
                                  "student_distilled scores below the majority class on the evaluation split "
                                  "(accuracy 0.375 < 0.500)"]


# ------------------------------------------------------------------------------------------------ the gate


def test_a_teacher_that_never_says_negative_is_stopped_before_labelling_and_the_override_finishes(
        tmp_path, capsys, tiny_bert_classifier_dir, tiny_bert_dir, tiny_tfns_dir):
    # Always "neutral": never negative (or positive), and exactly as good as the majority class.
    teacher = _biased_teacher(tiny_bert_classifier_dir, tmp_path / "teacher", {"Neutral": 50.0, "Bearish": -50.0})
    config, out = _config(tmp_path / "gate.yaml", teacher, tiny_bert_dir), tmp_path / "run"
    args = ["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]

    capsys.readouterr()
    assert main(args) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1, err
    assert "teacher never predicts 'negative' on dev (recall 0.00;" in err[0]
    assert "--set teacher.min_class_recall=0" in err[0]
    check = json.loads((out / "teacher_check.json").read_text())
    assert check["recall"]["negative"] == 0.0 and check["n"] == 12
    # Stopped before labelling: no teacher row, no student folder, only the dev texts' chunk in the cache.
    assert not (out / "predictions").exists() and not (out / "student").exists() and not (out / "student_ce").exists()
    assert len(list((out / "cache").glob("*.safetensors"))) == 1

    # The same command again stops again (the check is not re-run: its file is untouched).
    mtime = (out / "teacher_check.json").stat().st_mtime_ns
    assert main(args) == 2
    assert (out / "teacher_check.json").stat().st_mtime_ns == mtime
    capsys.readouterr()

    # The override lets the same run finish; the check and the warnings reach results.json and the reports.
    assert main(args + ["--set", "teacher.min_class_recall=0"]) == 0
    printed = capsys.readouterr().out
    assert (out / "teacher_check.json").stat().st_mtime_ns == mtime, "the threshold is not an input of the check"
    results = json.loads((out / "results.json").read_text())
    assert results["teacher_check"]["problems"] == [] and results["teacher_check"]["min_class_recall"] == 0
    assert any(w.startswith("biased-teacher never predicts 'negative' on the evaluation split")
               for w in results["warnings"])
    assert "WARNING: biased-teacher never predicts 'negative'" in printed
    assert "## Warnings" in (out / "report.md").read_text()
    assert "## Teacher check (dev split, before labelling)" in (out / "report.md").read_text()
    assert "never predicts &#x27;negative&#x27;" in (out / "report.html").read_text()
    assert "biased-teacher never predicts 'negative'" in (out / "student" / "README.md").read_text()
    # The end of the run: where the files are, and the student on five sentences.
    assert f"student: {out / 'student'}" in printed and "Shares of $XYZ plunge" in printed


def test_a_teacher_below_the_majority_class_needs_the_named_flag(tmp_path, capsys, tiny_bert_classifier_dir,
                                                                tiny_bert_dir, tiny_tfns_dir):
    # Always "positive" (a quarter of the texts) against always "neutral" (half of them).
    teacher = _biased_teacher(tiny_bert_classifier_dir, tmp_path / "teacher", {"Bullish": 50.0})
    config, out = _config(tmp_path / "gate.yaml", teacher, tiny_bert_dir), tmp_path / "run"
    args = ["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir), "--set",
            "teacher.min_class_recall=0"]
    capsys.readouterr()
    assert main(args) == 2
    (err,) = _errors(capsys.readouterr().err)
    assert "teacher scores below the majority class on dev (accuracy 0.250 < 0.500" in err
    assert "--set teacher.health_gate=false" in err
    assert main(args + ["--set", "teacher.health_gate=false"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["teacher_check"]["problems"] and results["teacher_check"]["health_gate"] is False


# ------------------------------------------------------------------------------------------------ the lock

_HOLDER = """
import sys, time
from pathlib import Path
from findistill.io import folder_lock
with folder_lock(Path(sys.argv[1]), shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(folder: Path, shared: bool = False) -> subprocess.Popen:
    """Another process that holds ``folder`` (as a run or a label shard would) until it is killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), "shared" if shared else "exclusive"],
                            env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture()
def gated_config(tmp_path, tiny_bert_classifier_dir, tiny_bert_dir):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_bert_classifier_dir, teacher)
    return _config(tmp_path / "lock.yaml", teacher, tiny_bert_dir, health_gate=False)


@pytest.mark.slow
def test_a_second_command_on_a_folder_in_use_stops_at_once_and_a_killed_holder_does_not_block(
        tmp_path, capsys, gated_config, tiny_tfns_dir):
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        # Refused while the holder still holds it (it sleeps until killed): the command did not wait for it.
        assert main(["run", str(gated_config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 2
        assert holder.poll() is None
        (err,) = _errors(capsys.readouterr().err)
        assert f"is in use by process {holder.pid} (findistill" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], "the refused command wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    # The killed holder's lock file is still there; it blocks nothing.
    assert (out / LOCK_FILE).is_file()
    assert main(["run", str(gated_config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    assert (out / "student" / "config.json").is_file()


def test_label_shards_share_a_folder_and_a_run_waits_for_none_of_them(tmp_path, capsys, gated_config, tiny_tfns_dir):
    out = tmp_path / "run"
    shard = _hold(out, shared=True)  # shard 0/2 at work in the same folder
    try:
        assert main(["label", str(gated_config), "--out", str(out), "--data-dir", str(tiny_tfns_dir),
                     "--shard", "1/2"]) == 0
        assert main(["run", str(gated_config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 2
        assert f"in use by process {shard.pid}" in capsys.readouterr().err
    finally:
        shard.send_signal(signal.SIGKILL)
        shard.wait(timeout=60)
    assert not (out / "student").exists()
