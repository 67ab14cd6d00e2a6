"""`findistill candidates` on tiny models: one row per candidate in both tables, a recommendation with its rule,
errors of one candidate kept in its row, and the recommendation rules themselves."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from findistill.__main__ import main
from findistill.pipeline.candidates import MemoryMeter, recommend_student, recommend_teacher


def write_config(path: Path, llama: Path, bert_clf: Path, bert: Path, bloom: Path) -> Path:
    prompted = {"kind": "prompted_lm", "model": str(llama), "name": "llama 0-shot", "batch_size": 8}
    classifier = {"kind": "classifier", "model": str(bert_clf), "name": "bert clf",
                  "label_map": {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}}
    config = {
        "name": "tiny-candidates",
        "data": {"dev_fraction": 0.2},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        "eval": {"bootstrap_samples": 200},
        "candidates": {
            "teachers": [
                prompted,
                {**prompted, "name": "llama 2-shot", "few_shot": 2},
                classifier,
                {"kind": "ensemble", "name": "ensemble", "members": [prompted, classifier]},
                {"kind": "classifier", "model": str(path.parent / "missing"), "name": "missing"},
            ],
            "students": [
                {"model": str(bert), "name": "tiny-bert", "method": "full", "max_length": 24},
                {"model": str(bloom), "name": "tiny-bloom", "method": "lora", "lora": {"r": 4, "alpha": 8},
                 "max_length": 24},
            ],
            "max_dev_examples": 9,
            "max_train_examples": 24,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_candidates_command_writes_both_tables(tmp_path, tiny_llama_dir, tiny_bert_classifier_dir, tiny_bert_dir,
                                               tiny_bloom_dir, tiny_tfns_dir, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bert_classifier_dir, tiny_bert_dir,
                          tiny_bloom_dir)
    out = tmp_path / "cand"
    assert main(["candidates", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]) == 0
    doc = json.loads((out / "candidates.json").read_text())
    assert doc["dataset"]["n_dev"] == 9 and doc["dataset"]["n_train"] == 24
    teachers = {r["name"]: r for r in doc["teachers"]}
    assert list(teachers) == ["llama 0-shot", "llama 2-shot", "bert clf", "ensemble", "missing"]
    assert "error" in teachers["missing"] and "\n" not in teachers["missing"]["error"]
    for name in ("llama 0-shot", "llama 2-shot", "bert clf", "ensemble"):
        row = teachers[name]
        assert row["n"] == 9 and 0 <= row["accuracy"] <= 1
        assert 0 <= row["accuracy_ci"][0] <= row["accuracy_ci"][1] <= 1 and row["confidence"] == 0.95
        assert row["params"] > 0 and row["peak_memory_mb"] >= 0 and row["examples_per_s"] > 0
    assert teachers["ensemble"]["params"] == teachers["llama 0-shot"]["params"] + teachers["bert clf"]["params"]
    students = {r["name"]: r for r in doc["students"]}
    assert list(students) == ["tiny-bert", "tiny-bloom"]
    for row in students.values():
        assert {"baseline_accuracy", "baseline_macro_f1", "accuracy", "macro_f1", "train_wall_time_s"} <= set(row)
        assert row["trainable_params"] <= row["params"] and row["train_examples"] == 24
    assert students["tiny-bloom"]["trainable_params"] < students["tiny-bloom"]["params"]
    maj = doc["majority"]
    assert maj["name"] == "majority class (neutral)" and maj["n"] == 9 and maj["confidence"] == 0.95
    rec = doc["recommendation"]

    def beats(r):
        return r["accuracy"] > maj["accuracy"] and r["macro_f1"] > maj["macro_f1"]

    for what, rows in (("teacher", teachers), ("student", students)):
        eligible = [n for n, r in rows.items() if "error" not in r and beats(r)]
        assert (rec[what]["name"] is None) == (not eligible), (what, rec[what], maj)
        assert rec[what]["name"] is None or rec[what]["name"] in eligible
        assert "majority class" in rec[what]["rule"]
    assert "fewest parameters" in rec["student"]["rule"]
    assert doc["memory_method"]

    md = (out / "candidates.md").read_text()
    assert "## Teachers" in md and "## Students" in md and md.count("**Recommended") == 2
    assert md.count(f"| {maj['name']} | majority (the bar) | 0 |") == 2  # the bar in both tables
    for name in list(teachers) + list(students):
        assert name in md
    assert "Rule:" in md and doc["memory_method"] in md
    assert "Recommended teacher" in capsys.readouterr().out


def test_recommendation_rules():
    rows = [
        {"name": "big", "macro_f1": 0.9, "accuracy": 0.9, "peak_memory_mb": 5000.0, "examples_per_s": 1.0},
        {"name": "small", "macro_f1": 0.8, "accuracy": 0.85, "peak_memory_mb": 500.0, "examples_per_s": 9.0},
        {"name": "broken", "error": "cannot load"},
    ]
    assert recommend_teacher(rows, budget_mb=10_000)["name"] == "big"
    rec = recommend_teacher(rows, budget_mb=1_000)
    assert rec["name"] == "small" and "1,000 MB" in rec["rule"]
    assert recommend_teacher(rows, budget_mb=10)["name"] is None
    students = [
        {"name": "a", "accuracy": 0.870, "params": 100},
        {"name": "b", "accuracy": 0.875, "params": 1000},
        {"name": "c", "accuracy": 0.800, "params": 10},
    ]
    assert recommend_student(students)["name"] == "a"  # within one point of the best, and smaller
    assert recommend_student(students[1:])["name"] == "b"


def test_memory_meter_sees_an_allocation():
    import numpy as np

    meter = MemoryMeter()
    with meter:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        block += 1
        import time

        time.sleep(0.1)
    assert meter.peak_mb > 32, meter.peak_mb


def test_no_candidates_is_a_one_line_error(tmp_path, capsys, tiny_tfns_dir):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    assert main(["candidates", str(config), "--out", str(tmp_path / "o"), "--data-dir", str(tiny_tfns_dir)]) == 2
    assert capsys.readouterr().err.strip() == "findistill: error: candidates: lists no teachers and no students"


MAJORITY = {"name": "majority class (neutral)", "accuracy": 0.65, "macro_f1": 0.26}


def test_no_candidate_below_the_majority_class_is_recommended():
    """Seen in the study: a zero-shot teacher at 0.217 dev accuracy against a 0.65 majority class was recommended."""
    teachers = [
        {"name": "SmolLM2 zero-shot", "macro_f1": 0.30, "accuracy": 0.217, "peak_memory_mb": 500.0,
         "examples_per_s": 5.0},
        {"name": "always neutral-ish", "macro_f1": 0.25, "accuracy": 0.66, "peak_memory_mb": 500.0,
         "examples_per_s": 5.0},
        {"name": "broken", "error": "cannot load"},
    ]
    rec = recommend_teacher(teachers, budget_mb=10_000, majority=MAJORITY)
    assert rec["name"] is None and rec["beats_majority"] is False
    assert "no teacher candidate beats the majority class" in rec["reason"] and "0.650" in rec["reason"]
    assert "none is recommended" in rec["reason"] and "majority class" in rec["rule"]
    good = {"name": "fine-tuned", "macro_f1": 0.70, "accuracy": 0.78, "peak_memory_mb": 900.0, "examples_per_s": 2.0}
    assert recommend_teacher(teachers + [good], budget_mb=10_000, majority=MAJORITY)["name"] == "fine-tuned"

    students = [{"name": "a", "accuracy": 0.60, "macro_f1": 0.5, "params": 100},
                {"name": "b", "accuracy": 0.70, "macro_f1": 0.2, "params": 1000}]  # b: accuracy only
    rec = recommend_student(students, majority=MAJORITY)
    assert rec["name"] is None and "no student candidate beats the majority class" in rec["reason"]
    students.append({"name": "c", "accuracy": 0.80, "macro_f1": 0.7, "params": 5000})
    assert recommend_student(students, majority=MAJORITY)["name"] == "c"


def test_refusal_is_rendered_with_the_majority_row():
    from findistill.pipeline.candidates import render_markdown

    maj = {**MAJORITY, "n": 100, "accuracy_ci": [0.6, 0.7], "macro_f1_ci": [0.25, 0.27], "confidence": 0.9}
    teacher = {"name": "zs", "kind": "prompted_lm", "few_shot": 0, "params": 10, "accuracy": 0.2,
               "accuracy_ci": [0.1, 0.3], "macro_f1": 0.2, "macro_f1_ci": [0.1, 0.3], "peak_memory_mb": 1.0,
               "examples_per_s": 3.0}
    doc = {"dataset": {"name": "d", "n_dev": 100, "n_train": 10}, "created": "now", "memory_method": "rss",
           "majority": maj, "teachers": [teacher], "students": [],
           "recommendation": {"teacher": recommend_teacher([teacher], 1e9, maj), "student": None}}
    md = render_markdown(doc)
    assert "| majority class (neutral) | majority (the bar) | 0 | 0.650 [0.600, 0.700] | 0.260 [0.250, 0.270] |" in md
    assert "dev accuracy [90% CI]" in md
    assert "**Recommended teacher:** none (no teacher candidate beats the majority class" in md
