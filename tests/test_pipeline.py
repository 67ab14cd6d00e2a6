"""`findistill run` end to end on tiny random models: a LLaMA teacher and a BLOOM student, each with its own
tokenizer, about 60 training rows, in a temporary folder. Checks the three contract outputs and resumption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from findistill.__main__ import main

ROLES = {"majority", "teacher", "student_baseline", "student_ce", "student_distilled"}


def write_config(path: Path, teacher_dir: Path, student_dir: Path, **sections) -> Path:
    config = {
        "name": "tiny",
        "data": {"dev_fraction": 0.2},
        "teacher": {"kind": "prompted_lm", "model": str(teacher_dir), "name": "tiny-llama", "batch_size": 8,
                    "few_shot": 1, "health_gate": False},  # a random teacher: the gate would stop it (test_gate)
        "student": {"model": str(student_dir), "name": "tiny-bloom", "method": "lora",
                    "lora": {"r": 4, "alpha": 8}, "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        "augment": {},
        "eval": {"bootstrap_samples": 200},
    }
    for key, value in sections.items():
        config[key].update(value)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def tiny_run(tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir):
    config = write_config(tmp_path / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    return config, out, tiny_tfns_dir


def test_run_writes_the_contract_outputs(tiny_run):
    _, out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["n"] == 24 and results["dataset"]["split"]
    rows = {row["role"]: row for row in results["rows"]}
    assert set(rows) == ROLES
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1
        lo, hi = row["accuracy_ci"]  # the percentile interval as computed (not widened to hold the estimate)
        assert 0 <= lo <= hi <= 1 and 0 < row["confidence"] < 1
        assert "params" in row
    assert rows["student_distilled"]["trainable_params"] < rows["student_distilled"]["params"]
    comps = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert ("student_distilled", "student_ce", "accuracy") in comps
    assert ("student_distilled", "student_ce", "macro_f1") in comps
    # Resolved config next to the outputs.
    assert yaml.safe_load((out / "config.yaml").read_text())["student"]["lora"]["r"] == 4

    report = (out / "report.md").read_text()
    assert "tiny-bloom" in report and "tiny-llama" in report and "```yaml" in report


def test_saved_student_loads_with_plain_transformers(tiny_run):
    _, out, _ = tiny_run
    # A fresh interpreter that never imports findistill.
    code = (
        "import sys, transformers\n"
        "assert 'findistill' not in sys.modules\n"
        f"clf = transformers.pipeline('text-classification', model={str(out / 'student')!r})\n"
        "print(clf('Shares of $XYZ plunge after the company cuts its outlook')[0]['label'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] in {"negative", "neutral", "positive"}
    assert not list((out / "student").glob("adapter_*")), "LoRA must be merged"


def test_rerun_resumes_without_teacher_forward_passes(tiny_run, monkeypatch):
    config, out, data_dir = tiny_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").glob("*.npz")}
    calls = []
    import findistill.teachers as teacher_mod

    original = teacher_mod.PromptedLMTeacher.class_logits

    def counting(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(teacher_mod.PromptedLMTeacher, "class_logits", counting)
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    assert calls == [], "teacher logits must come from the cache"
    after = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").glob("*.npz")}
    assert before == after, "finished stages are skipped"


def test_distill_command_trains_only_the_distilled_student(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_tfns_dir):
    """`findistill distill` on an encoder student with full fine-tuning and KD only (alpha = 1)."""
    config = write_config(tmp_path / "kd.yaml", tiny_llama_dir, tiny_bert_dir,
                          train={"alpha": 1.0, "temperature": 1.0, "epochs": 1, "learning_rate": 3e-3},
                          student={"method": "full"})
    out = tmp_path / "kd"
    assert main(["distill", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    assert (out / "student" / "config.json").is_file()
    assert not (out / "student_ce").exists(), "distill runs only the distillation stages"


def test_bad_config_is_a_one_line_error(tmp_path, capsys, tiny_tfns_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  alpha: 2\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "findistill: error: train.alpha: must be in [0, 1], got 2.0"
    assert not (tmp_path / "o").exists(), "a bad config writes nothing"


def test_missing_data_is_a_one_line_error(tmp_path, capsys, tiny_llama_dir, tiny_bloom_dir):
    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir)
    assert main(["run", str(config), "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("findistill: error:")


def test_cli_usage_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("run", "label", "distill", "evaluate", "export", "predict", "serve"):
        assert name in out
    assert main(["nope"]) == 2


def test_prediction_roundtrip(tmp_path):
    from findistill.evaluation.prediction import Prediction

    p = Prediction("m", "teacher", np.arange(6, dtype=np.float32).reshape(2, 3), {"params": 5})
    p.save(tmp_path / "p.npz")
    q = Prediction.load(tmp_path / "p.npz")
    assert (q.name, q.role, q.meta) == ("m", "teacher", {"params": 5})
    np.testing.assert_array_equal(q.logits, p.logits)


def test_run_with_augmentation_and_transfer_set(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_tfns_dir):
    """Paraphrases (filtered, counted) and an unlabelled transfer set enter the distilled student's training."""
    transfer = tmp_path / "transfer.txt"
    transfer.write_text("$ABC shares slide after guidance cut\n\n$DEF beats estimates\n$GHI files 10-Q\n")
    config = write_config(tmp_path / "aug.yaml", tiny_llama_dir, tiny_bert_dir,
                          data={"transfer_files": [str(transfer)]},
                          augment={"enabled": True, "num_paraphrases": 1, "max_source_examples": 6,
                                   "max_new_tokens": 8, "batch_size": 6, "drop_inconsistent": False,
                                   "drop_bad_length": False})
    out = tmp_path / "aug"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    results = json.loads((out / "results.json").read_text())
    aug = results["augmentation"]
    assert aug["generated"] == 6
    assert aug["generated"] == aug["kept"] + sum(aug["dropped"].values())
    meta = prediction_meta(out, "student_distilled")
    n_train = results["dataset"]["n_train"]
    assert meta["train_examples"] == n_train + aug["kept"] + 3, "gold + kept paraphrases + 3 transfer texts"
    assert prediction_meta(out, "student_ce")["train_examples"] == n_train + aug["kept"]
    assert "Augmentation" in (out / "report.md").read_text() or "augmentation" in (out / "report.md").read_text()
    # The transfer texts by source: read, kept, and what the teacher called each kept text (from its cached logits).
    source = results["transfer_sources"][str(transfer)]
    assert source["read"] == 3 and source["kept"] == 3 and sum(source["teacher_labels"].values()) == 3
    assert str(transfer) in (out / "report.md").read_text().split("## Transfer texts by source")[1]
    assert f"`{transfer}`: 3 of 3 texts" in (out / "student" / "README.md").read_text()


def test_held_out_transfer_texts_measure_fidelity_per_source_and_are_never_trained_on(
        tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_tfns_dir, capsys):
    """Two named sources with a held-out slice each: the teacher labels the slices, no student trains on them, and the
    report, report.html and the model card give per source and student the agreement with the teacher and the KL."""
    heads, posts = tmp_path / "headlines.txt", tmp_path / "posts.txt"
    heads.write_text("\n".join(f"Markets {w} as rates {v}" for w in ("rise", "fall", "drift") for v in
                               ("climb", "ease", "hold")) + "\n")
    posts.write_text("\n".join(f"$X{i} looks {w} to me" for i in range(4) for w in ("great", "awful")) + "\n")
    config = write_config(tmp_path / "h.yaml", tiny_llama_dir, tiny_bert_dir, data={
        "transfer_files": [{"path": str(heads), "name": "headlines", "max_examples": 4},
                           {"path": str(posts), "name": "posts"}], "transfer_holdout": 3})
    out = tmp_path / "h"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    results = json.loads((out / "results.json").read_text())
    fid = results["fidelity"]["sources"]
    assert set(fid) == {"headlines", "posts"} and fid["headlines"]["n"] == 3 and fid["posts"]["n"] == 3
    for entry in fid.values():
        assert sum(entry["teacher_labels"].values()) == 3
        assert set(entry["models"]) == {"student_ce", "student_distilled"}
        for m in entry["models"].values():
            lo, hi = m["agreement_ci"]
            assert 0 <= lo <= m["agreement"] <= hi <= 1 and m["mean_kl"] >= 0
    sources = results["dataset"]["transfer"]["sources"]
    assert sources["headlines"] == {"read": 9, "kept": 4, "held_out": 3}
    assert sources["posts"] == {"read": 8, "kept": 5, "held_out": 3}
    meta = prediction_meta(out, "student_distilled")
    assert meta["train_examples"] == results["dataset"]["n_train"] + 4 + 5, "gold + kept transfer, no held-out text"
    from findistill.config import load_config
    from findistill.pipeline import Run

    run = Run(load_config(config), out, str(tiny_tfns_dir))
    texts, _, _ = run._training_set(with_teacher=True)
    assert set(run.splits.holdout.texts).isdisjoint(texts)
    assert "## Fidelity per source" in (out / "report.md").read_text()
    assert "| source | read | kept | held out |" in (out / "report.md").read_text()
    assert 'id="fidelity"' in (out / "report.html").read_text()
    assert "`posts` (3 texts): agreement" in (out / "student" / "README.md").read_text()
    # the second run resumes: the held-out slice is the same seeded draw, so nothing re-runs
    plan = _dry_run(capsys, config, out, tiny_tfns_dir)
    assert _runs(plan) == set()


def prediction_meta(out: Path, role: str) -> dict:
    from findistill.evaluation.prediction import Prediction

    return Prediction.load(out / "predictions" / f"{role}.npz").meta


def _mtimes(out: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob(pattern) if p.is_file()}


def _keys(out: Path) -> dict[str, str]:
    return {name: rec["key"] for name, rec in json.loads((out / "stages.json").read_text())["stages"].items()}


def _dry_run(capsys, config, out, data_dir, *overrides) -> dict[str, tuple[str, str]]:
    sets = [a for o in overrides for a in ("--set", o)]
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir), "--dry-run", *sets]) == 0
    rows = {}
    for line in capsys.readouterr().out.strip().splitlines():
        name, action, why = line.split(maxsplit=2)
        rows[name] = (action, why)
    return rows


def _runs(plan: dict[str, tuple[str, str]]) -> set[str]:
    """The stages a dry-run plan would run."""
    return {name for name, (action, _) in plan.items() if action == "run"}


def test_changing_alpha_reruns_only_the_distilled_student_and_the_report(tiny_run, capsys, caplog, monkeypatch):
    config, out, data_dir = tiny_run
    import findistill.teachers as teacher_mod

    calls, original = [], teacher_mod.PromptedLMTeacher.class_logits
    monkeypatch.setattr(teacher_mod.PromptedLMTeacher, "class_logits",
                        lambda self, texts, *a, **k: calls.append(len(texts)) or original(self, texts, *a, **k))
    keys, stages_json = _keys(out), (out / "stages.json").read_bytes()
    assert set(keys) == {"teacher_check", "teacher_eval", "label", "student_baseline", "student_ce",
                         "student_distilled", "report", "analyze"}
    plan = _dry_run(capsys, config, out, data_dir, "train.alpha=0.9")
    assert _runs(plan) == {"student_distilled", "report", "analyze"}
    assert plan["student_distilled"][1] == "train.alpha: 0.5 -> 0.9"
    assert plan["teacher_finetune"][0] == "off" and plan["label"][0] == "skip"
    assert (out / "stages.json").read_bytes() == stages_json, "a dry run writes nothing"

    before = {**_mtimes(out, "predictions/*"), **_mtimes(out, "cache/*"), **_mtimes(out, "student_ce/*.safetensors")}
    distilled = (out / "predictions" / "student_distilled.npz").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir), "--set", "train.alpha=0.9"]) == 0
    after = {**_mtimes(out, "predictions/*"), **_mtimes(out, "cache/*"), **_mtimes(out, "student_ce/*.safetensors")}
    changed = {path for path in before if before[path] != after[path]}
    assert changed == {"predictions/student_distilled.npz"} and after.keys() == before.keys()
    assert (out / "predictions" / "student_distilled.npz").stat().st_mtime_ns > distilled
    assert "[teacher] loading" not in caplog.text, "the teacher's labels come from the cache"
    assert calls == [], "no teacher forward pass"
    new_keys = _keys(out)
    assert {n for n in keys if keys[n] != new_keys[n]} == {"student_distilled", "report", "analyze"}
    assert json.loads((out / "results.json").read_text())["config"]["train"]["alpha"] == 0.9
    assert _dry_run(capsys, config, out, data_dir, "train.alpha=0.9")["student_distilled"][0] == "skip"


def test_runs_sharing_cache_dir_label_once(tiny_run, monkeypatch, tmp_path):
    config, _, data_dir = tiny_run
    import findistill.teachers as teacher_mod

    shared = tmp_path / "shared-cache"
    common = ["--data-dir", str(data_dir), "--set", f"cache.dir={shared}"]
    assert main(["label", str(config), "--out", str(tmp_path / "a")] + common) == 0
    chunks = sorted(p.name for p in shared.glob("*.safetensors"))
    assert chunks and not (tmp_path / "a" / "cache").exists()
    calls, original = [], teacher_mod.PromptedLMTeacher.class_logits
    monkeypatch.setattr(teacher_mod.PromptedLMTeacher, "class_logits",
                        lambda self, texts, *a, **k: calls.append(len(texts)) or original(self, texts, *a, **k))
    assert main(["distill", str(config), "--out", str(tmp_path / "b"), "--set", "train.alpha=0.9"] + common) == 0
    assert calls == [], "another run folder, the same teacher and texts: every label comes from the shared folder"
    assert sorted(p.name for p in shared.glob("*.safetensors")) == chunks
    assert (tmp_path / "b" / "student" / "config.json").is_file() and not (tmp_path / "b" / "cache").exists()


def test_changing_the_student_reuses_the_teacher_and_its_labels(tiny_run, capsys):
    config, out, data_dir = tiny_run
    plan = _dry_run(capsys, config, out, data_dir, "student.lora.r=2")
    assert _runs(plan) == {
        "student_baseline", "student_ce", "student_distilled", "report", "analyze"}
    assert plan["student_ce"][1] == "student.lora.r: 4 -> 2"


def test_changing_the_teacher_relabels(tiny_run, capsys):
    config, out, data_dir = tiny_run
    plan = _dry_run(capsys, config, out, data_dir, "teacher.few_shot=0")
    assert _runs(plan) == {
        "teacher_check", "teacher_eval", "label", "student_distilled", "report", "analyze"}
    assert plan["label"][1] == "teacher inputs changed"
    chunks = set(_mtimes(out, "cache/*.safetensors"))
    ce = _mtimes(out, "student_ce/*.safetensors")
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir),
                 "--set", "teacher.few_shot=0"]) == 0
    from findistill.teachers.cache import texts_hash
    from findistill.config import load_config
    from findistill.pipeline.runner import Run

    splits = Run(load_config(config), out, str(data_dir)).splits
    new_chunks = {tuple(Path(p).stem.split("-")) for p in set(_mtimes(out, "cache/*.safetensors")) - chunks}
    assert len({fp for fp, _ in new_chunks}) == 1, "one new teacher"
    assert {texts_hash(splits.train.texts)[:24], texts_hash(splits.eval.texts)[:24]} <= {t for _, t in new_chunks}
    assert _mtimes(out, "student_ce/*.safetensors") == ce


def test_an_interrupted_stage_resumes_and_a_missing_output_reruns(tiny_run, capsys):
    config, out, data_dir = tiny_run
    (out / "student" / "config.json").unlink()
    records = json.loads((out / "stages.json").read_text())
    records["stages"]["student_ce"]["finished"] = None
    (out / "stages.json").write_text(json.dumps(records))
    plan = _dry_run(capsys, config, out, data_dir)
    assert plan["student_distilled"] == ("run", "student/config.json is missing")
    assert plan["student_ce"] == ("run", "interrupted: resumes")
    assert plan["report"] == ("run", "student_ce, student_distilled runs")


def test_evaluate_rebuilds_the_report_from_the_predictions_and_prints_the_table(tiny_run, capsys):
    config, out, data_dir = tiny_run
    (out / "results.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(config), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert printed.startswith("| model | role |") and all(row["name"] in printed for row in rows)


def test_a_folder_from_before_stage_keys_is_adopted_under_its_own_config(tiny_run, capsys, monkeypatch):
    """No stages.json: outputs are recorded under the keys of its config.yaml; its per-split teacher_logits/
    files are read while the teacher is unchanged, without loading the teacher."""
    import findistill.teachers as teacher_mod
    from findistill.teachers.cache import cache_key, save_cached, texts_hash
    from findistill.config import load_config
    from findistill.pipeline.runner import Run

    config, out, data_dir = tiny_run
    run = Run(load_config(config), out, str(data_dir))
    legacy = {}
    for split in (run.splits.train, run.splits.eval):  # the layout written before the chunked cache
        legacy[split.name] = np.full((len(split), 3), 0.25, np.float32)
        save_cached(out / "teacher_logits", cache_key({"run_split": split.name}, split.texts), legacy[split.name],
                    {"split": split.name, "texts_sha256": texts_hash(split.texts)})
    (out / "stages.json").unlink()
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("alpha: 0.5", "alpha: 0.7"))
    plan = _dry_run(capsys, config, out, data_dir)
    assert _runs(plan) == {"student_distilled", "report", "analyze"}
    assert plan["student_distilled"][1] == "train.alpha: 0.7 -> 0.5"

    monkeypatch.setattr(teacher_mod, "build_teacher", lambda *a, **k: (_ for _ in ()).throw(AssertionError("load")))
    fresh = Run(load_config(config), out, str(data_dir))
    np.testing.assert_array_equal(fresh.teacher_logits(fresh.splits.train), legacy["train"])
    changed = config.with_name("changed.yaml")
    changed.write_text(config.read_text().replace("few_shot: 1", "few_shot: 0"))
    other = Run(load_config(changed), out, str(data_dir))
    with pytest.raises(AssertionError, match="load"):  # another teacher: the legacy files are not its labels
        other.teacher_logits(other.splits.train)


def test_unreadable_config_of_an_old_folder_is_one_line(tiny_run, capsys):
    config, out, data_dir = tiny_run
    (out / "stages.json").unlink()
    (out / "config.yaml").write_text("train:\n  no_such_key: 1\n")
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by an older findistill" in err[0] and "train.no_such_key" in err[0]


def test_resume_reads_stored_teacher_logits_without_loading_the_teacher(tiny_run, monkeypatch):
    """After labelling, a resumed run that retrains a student never builds the teacher."""
    import shutil

    import findistill.teachers as teacher_mod

    config, out, data_dir = tiny_run
    shutil.rmtree(out / "student")
    (out / "predictions" / "student_distilled.npz").unlink()

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher must not be loaded")

    monkeypatch.setattr(teacher_mod, "build_teacher", no_teacher)
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    assert (out / "student" / "config.json").is_file()


def test_untrained_baseline_is_seeded(tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir):
    """The untrained head is drawn from the training seed, not from whatever the global RNG holds."""
    import torch

    from findistill.config import load_config
    from findistill.evaluation.prediction import Prediction
    from findistill.pipeline import Run

    config = load_config(write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir))
    logits = []
    for i in range(2):
        torch.manual_seed(100 + i)  # a different global RNG state before each run
        torch.rand(7 + i)
        run = Run(config, tmp_path / f"r{i}", str(tiny_tfns_dir))
        run.stage_student_baseline()
        logits.append(Prediction.load(run.prediction_path("student_baseline")).logits)
    np.testing.assert_array_equal(logits[0], logits[1])


def test_cross_fitting_labels_each_training_row_with_a_teacher_that_never_saw_it(
        tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, tiny_tfns_dir):
    from findistill.teachers.cache import texts_hash
    from findistill.config import load_config
    from findistill.pipeline.runner import Run
    from findistill.teachers import build_teacher

    config = write_config(tmp_path / "cf.yaml", tiny_bert_classifier_dir, tiny_bert_dir,
                          teacher={"kind": "classifier", "few_shot": 0, "max_length": 24,
                                   "finetune": {"enabled": True, "method": "head", "parameters": "full",
                                                "epochs": 1, "learning_rate": 1e-3, "cross_fit_folds": 2}},
                          student={"method": "full"})
    out = tmp_path / "cf"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    run = Run(load_config(config), out, str(tiny_tfns_dir))
    train, folds = run.splits.train, run.folds()
    oof = run.train_teacher_logits()
    in_fold = run.teacher_logits(train)
    assert np.isfinite(oof).all() and not np.allclose(oof, in_fold)
    for k, rows in enumerate(folds):
        summary = json.loads((run.fold_dir(k) / "finetune_summary.json").read_text())
        seen = train.subset([i for i in range(len(train)) if i not in set(rows)])
        assert summary["train_texts_sha256"] == texts_hash(seen.texts) != texts_hash(train.texts)
        fold_teacher = build_teacher(run.teacher_config(run.fold_dir(k)))
        np.testing.assert_allclose(oof[rows], fold_teacher.class_logits([train.texts[i] for i in rows]), atol=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert [f["fold"] for f in results["teacher_folds"]] == ["fold_0", "fold_1"]
    assert all(0 <= f["best"]["accuracy"] <= 1 for f in results["teacher_folds"])


def test_a_training_file_missing_a_class_is_refused_before_any_folder_or_model(
        tmp_path, capsys, tiny_llama_dir, tiny_bloom_dir, monkeypatch):
    import csv

    import findistill.teachers as teacher_mod

    folder = tmp_path / "one-class"
    folder.mkdir()
    for name, n in (("sent_train.csv", 30), ("sent_valid.csv", 6)):
        with open(folder / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows([(f"$XYZ reports results #{i}", 2) for i in range(n - 1)] + [("$XYZ jumps", 1)])
    monkeypatch.setattr(teacher_mod, "build_teacher", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir)
    out = tmp_path / "o"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too few: negative (0), positive (1)" in err[0]
    assert not out.exists(), "a data error leaves no run folder behind"


def test_tuned_verbalizer_teacher_is_read_without_the_configured_demonstrations(tmp_path, tiny_llama_dir,
                                                                                tiny_bloom_dir, tiny_tfns_dir):
    from findistill.config import load_config
    from findistill.pipeline.runner import Run

    config = load_config(write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir,
                                      teacher={"few_shot": 2, "finetune": {"enabled": True}}))
    run = Run(config, tmp_path / "r", str(tiny_tfns_dir))
    assert config.teacher.few_shot == 2 and run.teacher_config().few_shot == 0


def test_teacher_speed_excludes_its_load_and_the_teacher_is_released_after_labelling(
        tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir, monkeypatch):
    """On a fake clock (no wall-clock timing): the model load takes 1,000 s, each labelled chunk 1 s; the teacher's
    texts/s counts the chunk only."""
    import time as time_mod
    import types

    import findistill.teachers as teacher_mod
    import findistill.teachers.cache as cache_mod
    from findistill.config import load_config
    from findistill.evaluation.prediction import Prediction
    from findistill.pipeline import Run

    clock = [0.0]
    monkeypatch.setattr(cache_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], time=time_mod.time,
                                                                  sleep=time_mod.sleep))
    original_build, original_logits = teacher_mod.build_teacher, teacher_mod.PromptedLMTeacher.class_logits

    def slow_load(*args, **kwargs):
        clock[0] += 1000.0
        return original_build(*args, **kwargs)

    def one_second(self, texts, *args, **kwargs):
        clock[0] += 1.0
        return original_logits(self, texts, *args, **kwargs)

    monkeypatch.setattr(teacher_mod, "build_teacher", slow_load)
    monkeypatch.setattr(teacher_mod.PromptedLMTeacher, "class_logits", one_second)
    run = Run(load_config(write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir)), tmp_path / "r",
              str(tiny_tfns_dir))
    run.stage_teacher_eval()
    meta = Prediction.load(run.prediction_path("teacher")).meta
    assert meta["examples_per_s"] == len(run.splits.eval) / 1.0, "the 1,000 s load must not count as inference"
    run.stage_label()
    assert run._teacher is None, "labelling ends with the teacher's weights freed"


def test_label_shards_merge_into_the_single_process_cache_and_the_run_needs_no_teacher(
        tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir, capsys):
    import shutil

    from findistill.teachers.cache import load_cached
    from findistill.config import load_config
    from findistill.errors import ModelError
    from findistill.pipeline.runner import Run
    from findistill.teachers import build_teacher

    teacher_dir = tmp_path / "teacher-model"
    shutil.copytree(tiny_llama_dir, teacher_dir)
    config = write_config(tmp_path / "c.yaml", teacher_dir, tiny_bloom_dir)
    doc = yaml.safe_load(config.read_text())
    doc.update(cache={"chunk_size": 8}, evaluate_teacher=False)  # 48 training texts: 6 chunks; 12 dev texts: 2
    config.write_text(yaml.safe_dump(doc))

    def label(out: Path, *shard: str) -> Path:
        assert main(["label", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir), *shard]) == 0
        return out / "cache"

    def chunks(cache: Path) -> set[str]:
        return {p.stem for p in cache.glob("*.safetensors")}

    single = label(tmp_path / "single")
    a, b = label(tmp_path / "a", "--shard", "0/2"), label(tmp_path / "b", "--shard", "1/2")
    label(tmp_path / "same", "--shard", "0/2")
    same = label(tmp_path / "same", "--shard", "1/2")
    # Each shard checks the teacher on all dev texts (the gate) and labels its own half of the training texts.
    assert len(chunks(single)) == 8 and len(chunks(a)) == len(chunks(b)) == 5 and len(chunks(a) & chunks(b)) == 2
    merged = tmp_path / "merged" / "cache"
    shutil.copytree(a, merged)
    shutil.copytree(b, merged, dirs_exist_ok=True)
    for cache in (merged, same):
        assert chunks(cache) == chunks(single)
        identities = sorted(p.name for p in cache.glob("teacher-*.json"))
        assert identities == sorted(p.name for p in single.glob("teacher-*.json"))
        for key in chunks(single):
            np.testing.assert_allclose(load_cached(cache, key), load_cached(single, key), atol=1e-6)

    (teacher_dir / "model.safetensors").unlink()  # the teacher can no longer be loaded
    with pytest.raises(ModelError):
        train = Run(load_config(config), tmp_path / "single", str(tiny_tfns_dir)).splits.train
        build_teacher(load_config(config).teacher, train.texts, train.labels)
    out = tmp_path / "merged"
    assert main(["distill", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    assert (out / "student" / "config.json").is_file() and chunks(merged) == chunks(single)
    run = Run(load_config(config), out, str(tiny_tfns_dir))
    expected = Run(load_config(config), tmp_path / "single", str(tiny_tfns_dir)).train_teacher_logits()
    np.testing.assert_allclose(run.train_teacher_logits(), expected, atol=1e-6)


@pytest.mark.parametrize("shard", ["2/2", "1", "a/2", "-1/2", "0/0", "1/2/3"])
def test_bad_shard_is_refused_in_one_line(tmp_path, capsys, tiny_llama_dir, tiny_bloom_dir, shard):
    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bloom_dir)
    assert main(["label", str(config), "--out", str(tmp_path / "o"), f"--shard={shard}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("findistill: error: --shard: expected I/N") and repr(shard) in err[0]
    assert not (tmp_path / "o").exists()
