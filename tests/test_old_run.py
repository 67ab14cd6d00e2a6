"""A run folder and teacher cache written by an older findistill (tests/fixtures/run_v1, made before the package
moved into subpackages; see make_run_v1.py) still resume with today's code: same teacher fingerprint and identity
key, same cache keys, same stage keys, every stage skipped, and a student retrained from the cached logits with no
teacher forward pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from findistill.__main__ import main

FIXTURE = Path(__file__).parent / "fixtures" / "run_v1"


@pytest.fixture()
def old_run(tmp_path, monkeypatch):
    root = tmp_path / "run_v1"
    shutil.copytree(FIXTURE, root)
    monkeypatch.chdir(root)  # the config and the run folder name their models and data relative to it
    return root


def _run(*extra: str) -> int:
    return main(["run", "config.yaml", "--out", "run", "--data-dir", "data", *extra])


def test_every_stage_of_an_old_run_folder_is_up_to_date(old_run, capsys):
    assert _run("--dry-run") == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.split()[:1]
             and ln.split()[0] in {"teacher_check", "teacher_eval", "label", "student_baseline", "student_ce",
                                  "student_distilled", "report", "analyze"}]
    assert len(lines) == 8 and all(ln[1] == "skip" for ln in lines), lines


def test_stage_keys_teacher_fingerprint_and_cache_keys_are_unchanged(old_run):
    from findistill import load_config
    from findistill.pipeline.runner import Run
    from findistill.teachers import build_teacher
    from findistill.teachers.cache import cache_key

    recorded = json.loads((old_run / "run" / "stages.json").read_text())["stages"]
    run = Run(load_config("config.yaml"), Path("run"), "data")
    for stage, record in recorded.items():
        assert run.stage_key(stage) == record["key"], stage
    identity = run.teacher_key()
    stored = json.loads((old_run / "run" / "cache" / f"teacher-{identity}.json").read_text())
    train = run.splits.train  # the few-shot pool
    teacher = build_teacher(run.teacher_config(), train.texts, train.labels, seed=run.config.data.seed)
    assert teacher.fingerprint() == stored["fingerprint"]
    on_disk = {p.stem for p in (old_run / "run" / "cache").glob("*.safetensors")}
    for split in (run.splits.train, run.splits.dev, run.splits.eval):
        assert cache_key(teacher.fingerprint(), split.texts) in on_disk


def test_an_old_run_retrains_a_student_from_its_cache_without_the_teacher(old_run, monkeypatch):
    import findistill.teachers as teachers

    shutil.rmtree(old_run / "run" / "student")
    (old_run / "run" / "predictions" / "student_distilled.npz").unlink()

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher must not be loaded: its logits are in the old cache")

    monkeypatch.setattr(teachers, "build_teacher", no_teacher)
    assert _run() == 0
    assert (old_run / "run" / "student" / "config.json").is_file()
    assert (old_run / "run" / "predictions" / "student_distilled.npz").is_file()
