"""benchmarks/teacher_by_topic.py: the teacher's labels grouped by the transfer tweets' topic (never a sentiment)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_benchmark


def test_topics_are_grouped_least_sure_first_and_untopiced_texts_left_out():
    bench = load_benchmark("teacher_by_topic")
    sure, unsure = [8.0, 0.0, 0.0], [0.4, 0.0, 0.3]  # negative with p ~ 1.0; negative with p ~ 0.4
    logits = np.array([sure, sure, unsure, unsure, sure], dtype=np.float32)
    rows = bench.by_topic([5, 5, 14, 14, None], logits, threshold=0.9)
    assert [(r["topic"], r["name"], r["n"]) for r in rows] == [(14, "Macro", 2), (5, "Earnings", 2)]
    macro, earnings = rows
    assert macro["below_threshold"] == 1.0 and earnings["below_threshold"] == 0.0
    assert earnings["teacher_classes"] == {"negative": 1.0, "positive": 0.0, "neutral": 0.0}
    p = np.exp(unsure) / np.exp(unsure).sum()
    assert macro["mean_confidence"] == pytest.approx(p.max()) and macro["mean_entropy"] == pytest.approx(
        -(p * np.log(p)).sum())


def test_topics_are_read_by_the_normalised_text_and_the_first_row_wins(tmp_path):
    bench = load_benchmark("teacher_by_topic")
    (tmp_path / "topic_train.csv").write_text('text,label\n"Fed  holds\u00a0rates ",1\nOil up,6\n', encoding="utf-8")
    (tmp_path / "topic_valid.csv").write_text("text,label\nOil up,15\n", encoding="utf-8")
    assert bench.read_topics(tmp_path) == {"Fed holds rates": 1, "Oil up": 6}
    (tmp_path / "topic_valid.csv").unlink()
    with pytest.raises(SystemExit, match="topic_valid.csv not found"):
        bench.read_topics(tmp_path)
