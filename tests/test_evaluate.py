"""Tests of findistill.evaluation.metrics: metrics vs scikit-learn, bootstrap intervals, paired bootstrap, batched inference."""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from findistill.config import LABELS, EvalConfig
from findistill.errors import ModelError
from findistill.evaluation.metrics import (
    agreement,
    bootstrap_ci,
    classification_metrics,
    evaluate_row,
    macro_f1_from_confusion,
    majority_row,
    paired_bootstrap,
    predict_logits,
    predictions,
)

EVAL = EvalConfig(bootstrap_samples=200, confidence=0.95, seed=0)


def _random(n: int, seed: int, acc: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.15, 0.65, 0.2])
    pred = np.where(rng.random(n) < acc, y, rng.integers(0, 3, size=n))
    return y, pred


# --------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    y, pred = _random(500, seed)
    m = classification_metrics(y, pred)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert list(m["per_class"]) == list(LABELS)
    for i, name in enumerate(LABELS):
        assert m["per_class"][name] == pytest.approx(
            {"precision": prec[i], "recall": rec[i], "f1": f1[i], "support": sup[i]}
        )
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    # rows = true class
    assert [sum(r) for r in m["confusion_matrix"]] == [int((y == k).sum()) for k in range(3)]


def test_classification_metrics_zero_division_and_bad_ids():
    m = classification_metrics([1, 1, 1], [1, 1, 1])
    assert m["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == 1.0  # sklearn semantics: absent classes are left out of the mean
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 1])
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0])


@pytest.mark.parametrize("seed", range(6))
def test_macro_f1_from_confusion_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    # Sometimes a class is missing entirely (seed 4, 5), covering sklearn's "present labels" averaging.
    k = 3 if seed < 4 else 2
    y, pred = rng.integers(0, k, size=n), rng.integers(0, 3 if seed < 5 else k, size=n)
    cm = confusion_matrix(y, pred, labels=[0, 1, 2])
    assert float(macro_f1_from_confusion(cm)) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


def test_predictions_and_agreement():
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert predictions(logits).tolist() == [1, 0, 2]
    assert agreement([1, 0, 2], [1, 0, 0]) == pytest.approx(2 / 3)
    assert agreement(logits, [1, 0, 2]) == 1.0
    with pytest.raises(ValueError):
        agreement([1, 2], [1])


# --------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_ci_contains_estimate_and_narrows(metric):
    small_y, small_p = _random(200, 3)
    big_y, big_p = _random(5000, 3)
    lo_s, hi_s = bootstrap_ci(small_y, small_p, metric, n_samples=500)
    lo_b, hi_b = bootstrap_ci(big_y, big_p, metric, n_samples=500)
    m_s = classification_metrics(small_y, small_p)[metric]
    m_b = classification_metrics(big_y, big_p)[metric]
    assert lo_s <= m_s <= hi_s
    assert lo_b <= m_b <= hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 2
    # deterministic for a seed
    assert bootstrap_ci(small_y, small_p, metric, n_samples=500, seed=7) == bootstrap_ci(
        small_y, small_p, metric, n_samples=500, seed=7
    )


def test_bootstrap_ci_validates_arguments():
    y, p = _random(50, 0)
    with pytest.raises(ValueError):
        bootstrap_ci(y, p, "f1_weighted")
    with pytest.raises(ValueError):
        bootstrap_ci(y, p, "accuracy", confidence=1.5)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_paired_bootstrap_self_is_zero(metric):
    y, p = _random(400, 1)
    res = paired_bootstrap(y, p, p, metric, n_samples=300, confidence=0.95, seed=0)
    assert res["metric"] == metric
    assert res["diff"] == 0.0
    assert res["ci"] == [0.0, 0.0] and res["confidence"] == 0.95
    assert "ci95" not in res and "p_value" not in res
    if metric == "accuracy":
        assert res["mcnemar_p"] == 1.0 and res["discordant"] == [0, 0]
    else:
        assert "mcnemar_p" not in res


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_paired_bootstrap_better_model(metric):
    rng = np.random.default_rng(5)
    y, weak = _random(1000, 5, acc=0.5)
    strong = np.where(rng.random(1000) < 0.9, y, weak)
    res = paired_bootstrap(y, strong, weak, metric, n_samples=500, confidence=0.95, seed=0, name_a="s", name_b="w")
    full = classification_metrics(y, strong)[metric] - classification_metrics(y, weak)[metric]
    assert res["diff"] == pytest.approx(full)
    assert 0 < res["ci"][0] <= res["diff"] <= res["ci"][1]
    assert (res["a"], res["b"]) == ("s", "w")
    flipped = paired_bootstrap(y, weak, strong, metric, n_samples=500, confidence=0.95, seed=0)
    assert flipped["diff"] == pytest.approx(-res["diff"])
    assert flipped["ci"][1] < 0
    if metric == "accuracy":
        assert res["mcnemar_p"] < 1e-6
        assert flipped["mcnemar_p"] == res["mcnemar_p"] and flipped["discordant"] == res["discordant"][::-1]


def test_paired_bootstrap_p_value_is_large_for_equal_models():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, size=600)
    a = np.where(rng.random(600) < 0.7, y, rng.integers(0, 3, size=600))
    b = np.where(rng.random(600) < 0.7, y, rng.integers(0, 3, size=600))
    res = paired_bootstrap(y, a, b, "accuracy", n_samples=500, confidence=0.95, seed=0)
    assert res["ci"][0] < 0 < res["ci"][1]
    assert res["mcnemar_p"] > 0.05


def test_mcnemar_is_the_exact_binomial_test_on_discordant_rows():
    """2 rows where only a is right, 9 where only b is right, 9 where both agree: p = 2 * P(X <= 2), X ~ B(11, 1/2)."""
    from math import comb

    from findistill.evaluation.metrics import mcnemar_exact

    y = np.zeros(20, dtype=int)
    a = np.array([0] * 2 + [1] * 9 + [0] * 5 + [2] * 4)  # right on rows 0-1 and 11-15
    b = np.array([2] * 2 + [0] * 9 + [0] * 5 + [1] * 4)  # right on rows 2-15
    res = paired_bootstrap(y, a, b, "accuracy", n_samples=200, confidence=0.9, seed=0)
    exact = 2 * sum(comb(11, k) for k in range(3)) / 2 ** 11
    assert res["discordant"] == [2, 9] and res["mcnemar_p"] == pytest.approx(exact, rel=1e-12)
    assert res["confidence"] == 0.9 and res["diff"] == pytest.approx((7 - 14) / 20)
    assert mcnemar_exact(y, a, b) == {"mcnemar_p": res["mcnemar_p"], "discordant": [2, 9]}
    # only discordant rows count: adding rows where both are right or both wrong changes nothing
    y2, a2, b2 = (np.concatenate([v, extra]) for v, extra in ((y, [0, 1]), (a, [0, 2]), (b, [0, 0])))
    assert mcnemar_exact(y2, a2, b2)["mcnemar_p"] == res["mcnemar_p"]


def test_interval_keys_name_no_level_and_store_it():
    y, p = _random(300, 4)
    logits = np.eye(3, dtype=np.float32)[p]
    for level in (0.8, 0.95):
        row = evaluate_row("m", "student_ce", y, logits, EvalConfig(bootstrap_samples=200, confidence=level))
        assert row["confidence"] == level
        assert not [k for k in row if "95" in k]
        for metric in ("accuracy", "macro_f1"):
            assert row[f"{metric}_ci"] == list(bootstrap_ci(y, p, metric, n_samples=200, confidence=level, seed=0))
    narrow = evaluate_row("m", "student_ce", y, logits, EvalConfig(bootstrap_samples=200, confidence=0.8))
    assert narrow["accuracy_ci"][1] - narrow["accuracy_ci"][0] < row["accuracy_ci"][1] - row["accuracy_ci"][0]


def test_interval_is_kept_as_computed_not_widened():
    """A tiny sample whose 51 % percentile interval misses the point estimate: the row keeps the interval."""
    y = np.array([2, 2, 1, 2, 1, 0, 1])
    p = np.array([0, 2, 1, 0, 2, 0, 0])
    cfg = EvalConfig(bootstrap_samples=100, confidence=0.51, seed=0)
    row = evaluate_row("tiny", "student_ce", y, np.eye(3, dtype=np.float32)[p], cfg)
    lo, hi = bootstrap_ci(y, p, "macro_f1", n_samples=100, confidence=0.51, seed=0)
    assert row["macro_f1_ci"] == [lo, hi]
    assert not lo <= row["macro_f1"] <= hi  # 0.433 outside [0.244, 0.418]: reported as it is


# --------------------------------------------------------------------------------------------- rows


def test_evaluate_row_keys_and_agreement():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=120)
    logits = rng.normal(size=(120, 3)).astype(np.float32)
    logits[np.arange(120), y] += 1.5
    teacher = logits + rng.normal(scale=0.5, size=logits.shape)
    row = evaluate_row("student", "student_distilled", y, logits, EVAL, reference_logits=teacher,
                       params=22_700_000, trainable_params=1000, train_wall_time_s=3.5, examples_per_s=900.0)
    for key in ("name", "role", "n", "accuracy", "macro_f1", "accuracy_ci", "macro_f1_ci", "confidence", "per_class",
                "confusion_matrix", "agreement_with_teacher", "params", "trainable_params", "train_wall_time_s",
                "examples_per_s"):
        assert key in row
    assert row["n"] == 120
    assert row["accuracy"] == pytest.approx(accuracy_score(y, logits.argmax(1)))
    assert row["agreement_with_teacher"] == pytest.approx(np.mean(logits.argmax(1) == teacher.argmax(1)))
    for metric in ("accuracy", "macro_f1"):
        lo, hi = row[f"{metric}_ci"]
        assert lo <= row[metric] <= hi
    assert "predictions" not in row and "logits" not in row
    with pytest.raises(ValueError):
        evaluate_row("x", "teacher", y, logits, EVAL, accuracy=1.0)
    with pytest.raises(ValueError):
        evaluate_row("x", "teacher", y, logits[:, :2], EVAL)


def test_majority_row_uses_training_labels():
    y_eval = np.array([0, 0, 0, 2, 1])  # eval majority would be negative
    train = [1, 1, 1, 0, 2, -1, -1, -1, -1]  # -1 (unlabelled) must be ignored
    row = majority_row(y_eval, train, EVAL)
    assert row["name"] == "majority class (neutral)"
    assert row["role"] == "majority"
    assert row["params"] == 0
    assert row["accuracy"] == pytest.approx(0.2)
    assert row["confusion_matrix"] == [[0, 3, 0], [0, 1, 0], [0, 1, 0]]


# --------------------------------------------------------------------------------------------- inference

TEXTS = [
    "$AAPL soars on strong earnings",
    "Tesla",
    "the bank cut to sell at Credit Suisse after it misses estimates and shares fall sharply #12",
    "Nomura to present at conference",
    "$BYND files quarterly report",
    "Carnival shares jump to record, upgraded to buy, beats estimates #3",
    "Cemex announces dividend date",
]


def _direct_logits(model, tok, texts):
    import torch

    model.eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tok([text], return_tensors="pt", truncation=True, max_length=128)
            rows.append(model(**enc).logits[0].float().numpy())
    return np.stack(rows)


def test_predict_logits_encoder_batch_invariant(tiny_bert_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_classifier_dir)
    model.train()
    direct = _direct_logits(model, tok, TEXTS)
    model.train()
    outs = [predict_logits(model, tok, TEXTS, batch_size=bs, desc="eval") for bs in (1, 3, 64)]
    assert model.training  # mode restored
    for out in outs:
        assert out.dtype == np.float32 and out.shape == (len(TEXTS), 3)
        np.testing.assert_allclose(out, direct, atol=1e-5)
    assert predict_logits(model, tok, [], batch_size=4).shape == (0, 3)


@pytest.mark.parametrize("side", ["left", "right"])
def test_predict_logits_decoder_only(tiny_bloom_dir, side):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bloom_dir)
    tok.padding_side = side
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bloom_dir, num_labels=3)
    model.config.pad_token_id = tok.pad_token_id
    direct = _direct_logits(model, tok, TEXTS)
    out = predict_logits(model, tok, TEXTS, batch_size=4)
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_predict_logits_needs_pad_token(tiny_bloom_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bloom_dir)
    tok.pad_token = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bloom_dir, num_labels=3)
    with pytest.raises(ModelError):
        predict_logits(model, tok, TEXTS, batch_size=4)


def test_fidelity_per_source_agreement_and_kl():
    import math

    from findistill.config import EvalConfig
    from findistill.evaluation.metrics import fidelity

    teacher = np.array([[50.0, 0, 0]] * 4 + [[0, 0, 50.0]] * 2)  # source a: 4 sure negatives; b: 2 sure positives
    same, uniform = teacher.copy(), np.zeros_like(teacher)
    flipped = teacher[:, ::-1].copy()
    out = fidelity(["a"] * 4 + ["b"] * 2, teacher, {"student_ce": ("same", same), "student_distilled": ("u", uniform),
                                                     "x": ("flip", flipped)}, EvalConfig(bootstrap_samples=200))
    a, b = out["sources"]["a"], out["sources"]["b"]
    assert a["n"] == 4 and a["teacher_labels"] == {"negative": 4, "neutral": 0, "positive": 0}
    assert b["teacher_labels"] == {"negative": 0, "neutral": 0, "positive": 2}
    assert a["models"]["student_ce"]["agreement"] == 1.0 and abs(a["models"]["student_ce"]["mean_kl"]) < 1e-9
    assert abs(a["models"]["student_distilled"]["mean_kl"] - math.log(3)) < 1e-6  # KL(one-hot || uniform) = log 3
    assert a["models"]["x"]["agreement"] == 0.0 and a["models"]["x"]["agreement_ci"] == [0.0, 0.0]
