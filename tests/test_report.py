"""Tests of findistill.evaluation.report: results validation, Markdown rendering, atomic writing and loading."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from findistill.config import EvalConfig
from findistill.errors import DataError
from findistill.evaluation.metrics import evaluate_row, majority_row, paired_bootstrap, predictions
from findistill.evaluation.report import (
    build_results,
    human_params,
    load_results,
    render_comparisons,
    render_report,
    render_table,
    write_results,
)

EVAL = EvalConfig(bootstrap_samples=200, seed=0)
DATASET = {"name": "zeroshot/twitter-financial-news-sentiment", "split": "validation", "n": 300,
           "label_counts": {"negative": 45, "neutral": 195, "positive": 60}, "duplicates": {"train-eval overlap": 2}}


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=300, p=[0.15, 0.65, 0.2])

    def logits(acc):
        pred = np.where(rng.random(300) < acc, y, rng.integers(0, 3, size=300))
        return np.eye(3, dtype=np.float32)[pred] * 2 + rng.normal(scale=0.1, size=(300, 3)).astype(np.float32)

    teacher, ce, kd = logits(0.9), logits(0.7), logits(0.8)
    rows = [
        majority_row(y, y, EVAL),
        evaluate_row("Llama-2-7b ABSA", "teacher", y, teacher, EVAL, params=6_738_415_616),
        evaluate_row("MiniLM CE-only", "student_ce", y, ce, EVAL, reference_logits=teacher, params=22_713_216,
                     examples_per_s=1234.5),
        evaluate_row("MiniLM distilled", "student_distilled", y, kd, EVAL, reference_logits=teacher,
                     params=22_713_216, trainable_params=1_000_000),
    ]
    comps = [paired_bootstrap(y, predictions(kd), predictions(ce), m, 200, 0.95, 0, name_a="distilled",
                              name_b="CE-only") for m in ("accuracy", "macro_f1")]
    return rows, comps


def test_build_results_keeps_extra_and_is_json(parts):
    rows, comps = parts
    res = build_results(DATASET, rows, comps, config={"name": "demo"}, created="2025-01-01T00:00:00Z",
                        machine="cpu", augmentation={"generated": 10, "kept": 7, "dropped": {"near_copy": 3}},
                        extra_np=np.float32(0.5))
    assert set(res) >= {"dataset", "rows", "comparisons", "config", "created", "machine", "augmentation"}
    assert isinstance(res["extra_np"], float)
    json.dumps(res, allow_nan=False)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(role="student_magic"), "role"),
        (lambda r: r.pop("macro_f1"), "missing"),
        (lambda r: r.update(accuracy_ci=[0.5, 1.2]), "inside"),
        (lambda r: r.update(macro_f1_ci=[0.1]), "lo, hi"),
        (lambda r: r.update(accuracy_ci=[0.6, 0.5]), "lo 0.6 > hi"),
        (lambda r: r.pop("confidence"), "missing keys confidence"),
        (lambda r: r.update(confidence=95), "confidence"),
        (lambda r: r.update(accuracy=float("nan")), "finite"),
    ],
)
def test_build_results_rejects_bad_rows(parts, mutate, message):
    rows, comps = parts
    bad = copy.deepcopy(rows)
    mutate(bad[2])
    with pytest.raises(ValueError, match=message):
        build_results(DATASET, bad, comps)


def test_build_results_rejects_bad_comparison_and_clash(parts):
    rows, comps = parts
    bad = copy.deepcopy(comps)
    bad[0]["mcnemar_p"] = 2.0
    with pytest.raises(ValueError, match="mcnemar_p"):
        build_results(DATASET, rows, bad)
    bad = copy.deepcopy(comps)
    bad[1]["ci95"] = bad[1].pop("ci")
    with pytest.raises(ValueError, match="missing keys ci"):
        build_results(DATASET, rows, bad)
    with pytest.raises(ValueError):
        build_results(DATASET, rows, comps, rows=[])
    with pytest.raises(ValueError):
        build_results(DATASET, rows, comps, dataset={})
    with pytest.raises(ValueError):
        build_results(DATASET, [], comps)


def test_human_params():
    assert human_params(22_713_216) == "22.7M"
    assert human_params(134_515_008) == "135M"
    assert human_params(1_100_048_384) == "1.1B"
    assert human_params(999_999_999) == "1B"
    assert human_params(0) == "0"
    assert human_params(None) == "—"


def test_render_table(parts):
    rows, _ = parts
    table = render_table(rows)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model | role | params | accuracy")
    assert "agreement with teacher" in lines[0] and "examples/s" in lines[0]
    assert len(lines) == 2 + len(rows)
    for row in rows:
        assert row["name"] in table
    kd = rows[3]
    lo, hi = kd["accuracy_ci"]
    assert f"{kd['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" in table
    assert "22.7M" in table and "6.74B" in table
    # No agreement column when no row has one.
    assert "agreement" not in render_table(rows[:2])


def test_render_table_names_the_level(parts):
    rows, _ = parts
    assert "accuracy [95% CI]" in render_table(rows)
    at90 = [dict(r, confidence=0.9) for r in rows]
    assert "accuracy [90% CI]" in render_table(at90) and "95%" not in render_table(at90)
    assert "accuracy [CI]" in render_table(at90[:2] + rows[2:])  # mixed levels: no single level claimed


def test_render_comparisons():
    text = render_comparisons([{"metric": "accuracy", "diff": 0.012, "ci": [-0.003, 0.027], "confidence": 0.95,
                                "mcnemar_p": 0.14, "discordant": [30, 20], "a": "distilled", "b": "CE-only"},
                               {"metric": "macro_f1", "diff": 0.05, "ci": [0.03, 0.07], "confidence": 0.9,
                                "n_samples": 1000, "name": "KD gain"},
                               {"metric": "accuracy", "diff": 0.1, "ci": [0.05, 0.15], "confidence": 0.95,
                                "mcnemar_p": 1e-9, "name": "big"}])
    assert ("- distilled − CE-only, accuracy: +0.012 [−0.003, +0.027] (95% CI); McNemar exact p = 0.140 "
            "(30 vs 20 discordant rows)") in text
    assert "- KD gain, macro-F1: +0.050 [+0.030, +0.070] (90% CI)\n" in text
    assert "- big, accuracy: +0.100 [+0.050, +0.150] (95% CI); McNemar exact p < 0.001" in text


def test_render_report_sections(parts):
    rows, comps = parts
    aug = {"generated": 10, "kept": 7, "dropped": {"near_copy": 2, "label_flip": 1},
           "examples": [{"original": "$AAPL soars", "paraphrase": "Apple shares surge", "label": "positive"}]}
    res = build_results(DATASET, rows, comps, augmentation=aug, config={"name": "demo"})
    md = render_report(res, "name: demo\ntrain:\n  epochs: 2\n")
    assert md.startswith("# findistill report: demo")
    assert "zeroshot/twitter-financial-news-sentiment" in md and "n = 300" in md and "neutral 195" in md
    assert "train-eval overlap 2" in md
    assert "| model | role | params |" in md
    for row in rows:
        assert row["name"] in md
    assert "distilled − CE-only, accuracy:" in md and "McNemar exact p" in md and "95% CI" in md
    assert "## Per-class F1" in md and "## Confusion matrices" in md
    assert "## Augmentation" in md and "kept 7" in md and "near_copy 2" in md and "Apple shares surge" in md
    assert "```yaml\nname: demo\ntrain:\n  epochs: 2\n```" in md
    # Without augmentation / config those sections are absent.
    plain = render_report(build_results(DATASET, rows, []), None)
    assert "## Augmentation" not in plain and "```yaml" not in plain and "## Paired" not in plain


def test_write_and_load_results(parts, tmp_path):
    rows, comps = parts
    res = build_results(DATASET, rows, comps)
    run_dir = tmp_path / "run"
    write_results(run_dir, res, "name: demo\n")
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.md", "results.json"]
    assert load_results(run_dir / "results.json") == res
    assert load_results(run_dir) == res
    assert "```yaml" in (run_dir / "report.md").read_text()
    # Overwriting works and still leaves no temp files.
    write_results(run_dir, res, None)
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.md", "results.json"]


def test_load_results_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_results(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError):
        load_results(tmp_path / "bad.json")
    (tmp_path / "invalid.json").write_text(json.dumps({"dataset": {}, "rows": [], "comparisons": []}))
    with pytest.raises(DataError, match="rows"):
        load_results(tmp_path / "invalid.json")


COMMITTED = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*/results.json")
                   if {"dataset", "rows", "comparisons"} <= json.loads(p.read_text()).keys())  # run results, not timings


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_results_with_old_key_names_still_load_and_render(path):
    """benchmarks/results/ hold documents written with accuracy_ci95 / ci95 / p_value: they load under the new names."""
    old = json.loads(path.read_text())
    res = load_results(path)
    assert not [k for r in res["rows"] for k in r if k.endswith("_ci95")]
    for new_row, old_row in zip(res["rows"], old["rows"]):
        assert new_row["accuracy_ci"] == old_row.get("accuracy_ci95", old_row.get("accuracy_ci"))
        assert new_row["confidence"] == 0.95
    for comp in res["comparisons"]:
        assert "ci" in comp and "ci95" not in comp and "p_value" not in comp
    md = render_report(res)
    assert "accuracy [95% CI]" in md and "## Paired comparisons" in md


def test_upgrade_legacy_leaves_current_documents_alone(parts):
    from findistill.evaluation.report import upgrade_legacy

    rows, comps = parts
    res = build_results(DATASET, rows, comps)
    assert upgrade_legacy(res) == res
