"""DistillationTrainer / train_student on tiny random students: a few CPU steps each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_rows
from findistill.config import LoraSettings, StudentConfig, TrainConfig
from findistill.errors import DataError
from findistill.models.student import build_student
from findistill.training.trainer import DistillationCollator, build_train_dataset, train_student

TFNS_TO_CANONICAL = {0: 0, 1: 2, 2: 1}  # Bearish -> negative, Bullish -> positive, Neutral -> neutral


def _data(n: int = 24, seed: int = 0):
    rows = make_rows(n, seed)
    texts = [t for t, _ in rows]
    labels = [TFNS_TO_CANONICAL[y] for _, y in rows]
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    logits[np.arange(n), labels] += 3.0  # a teacher that mostly agrees with gold
    return texts, labels, logits


def _train_cfg(**kw) -> TrainConfig:
    base = dict(epochs=1.0, learning_rate=5e-3, batch_size=8, max_steps=4, logging_steps=1, warmup_ratio=0.0,
                lr_scheduler="constant", temperature=2.0, alpha=0.5, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _losses(history, key="loss"):
    return [h[key] for h in history if key in h]


@pytest.mark.parametrize("fixture", ["tiny_bloom_dir", "tiny_bert_dir"])
def test_lora_distillation_logs_parts_and_learns(request, tmp_path, fixture):
    folder = request.getfixturevalue(fixture)
    texts, labels, logits = _data()
    # Mixed batch: a third of the rows have no gold label (KD only), two rows no teacher logits (CE only).
    labels = [-1 if i % 3 == 0 else y for i, y in enumerate(labels)]
    logits[[1, 2]] = np.nan
    student = StudentConfig(model=str(folder), lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=16)
    # Full-batch steps (batch_size = 24) so that successive losses are comparable.
    res = train_student(student, _train_cfg(max_steps=6, batch_size=24), texts, labels, logits, tmp_path / "run")
    assert res.steps == 6
    assert 0 < res.trainable_params < res.total_params
    assert res.wall_time_s > 0
    loss, kd, ce = _losses(res.log_history), _losses(res.log_history, "kd_loss"), _losses(res.log_history, "ce_loss")
    assert len(loss) == len(kd) == len(ce) == 6
    assert all(math.isfinite(v) for v in loss + kd + ce)
    # The logged loss is the alpha mix of the logged parts (one micro-batch per step here).
    for total, k, c in zip(loss, kd, ce):
        assert total == pytest.approx(0.5 * k + 0.5 * c, rel=1e-3, abs=1e-4)
    # Same 24 rows every step at lr 5e-3: the loss goes down.
    assert loss[-1] < loss[0]
    # Only adapters and the head moved.
    moved = [n for n, p in res.model.named_parameters() if p.requires_grad]
    assert moved and all("lora_" in n or "modules_to_save" in n for n in moved)


def test_ce_only_student_without_teacher_logits(tiny_bert_dir, tmp_path):
    texts, labels, _ = _data(16)
    student = StudentConfig(model=str(tiny_bert_dir), method="full", max_length=16)
    res = train_student(student, _train_cfg(max_steps=2), texts, labels, None, tmp_path / "run", alpha=0.9)
    kd = _losses(res.log_history, "kd_loss")
    ce = _losses(res.log_history, "ce_loss")
    assert kd == [0.0, 0.0] and all(math.isfinite(v) and v > 0 for v in ce)
    assert res.trainable_params == res.total_params
    # alpha forced to 0: the loss is the CE part itself.
    assert _losses(res.log_history) == pytest.approx(ce, rel=1e-3)


def test_gradient_accumulation_logs_the_per_step_mean(tiny_bert_dir, tmp_path):
    texts, labels, logits = _data(16)
    student = StudentConfig(model=str(tiny_bert_dir), lora=LoraSettings(r=2, alpha=4, dropout=0.0), max_length=16)
    cfg = _train_cfg(max_steps=2, batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-6)
    res = train_student(student, cfg, texts, labels, logits, tmp_path / "run", alpha=0.0)
    # Not scaled by the accumulation steps twice (nor zero): the logged loss stays a per-example CE (~ln 3).
    for total, ce in zip(_losses(res.log_history), _losses(res.log_history, "ce_loss")):
        assert total == pytest.approx(ce, rel=0.05)


def test_collator_pads_and_stacks(tiny_bloom_dir):
    _, tok = build_student(StudentConfig(model=str(tiny_bloom_dir), method="full"))
    texts, labels, logits = _data(4)
    logits[2] = np.nan
    ds = build_train_dataset(tok, texts, [labels[0], -1, labels[2], labels[3]], logits, max_length=8)
    batch = DistillationCollator(tok)([ds[i] for i in range(4)])
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[1] <= 8
    assert batch["labels"].tolist()[1] == -1 and batch["labels"].dtype == torch.long
    assert batch["teacher_logits"].shape == (4, 3) and torch.isnan(batch["teacher_logits"][2]).all()


def test_bad_inputs_are_data_errors(tiny_bloom_dir, tmp_path):
    _, tok = build_student(StudentConfig(model=str(tiny_bloom_dir), method="full"))
    with pytest.raises(DataError):
        build_train_dataset(tok, ["a", "b"], [0], None, 8)
    with pytest.raises(DataError):
        build_train_dataset(tok, ["a", "b"], [0, 5], None, 8)
    with pytest.raises(DataError):
        build_train_dataset(tok, ["a", "b"], [0, 1], np.zeros((2, 2)), 8)
    with pytest.raises(DataError):
        train_student(StudentConfig(model=str(tiny_bloom_dir)), _train_cfg(), ["a", "b"], [-1, -1], None, tmp_path)


def test_dev_selection_returns_the_best_scored_checkpoint(tmp_path, tiny_bert_dir):
    """Scored on dev every 2 steps; the returned weights are the checkpoint with the best dev macro-F1."""
    from findistill.evaluation.metrics import classification_metrics, predict_logits

    texts, labels, logits = _data()
    dev_texts, dev_labels = texts[:12], labels[:12]
    student = StudentConfig(model=str(tiny_bert_dir), method="full", max_length=16)
    cfg = _train_cfg(max_steps=9, selection="steps", selection_steps=2, learning_rate=2e-2)
    res = train_student(student, cfg, texts, labels, logits, tmp_path / "run", dev=(dev_texts, dev_labels))
    scores = {h["step"]: h["eval_macro_f1"] for h in res.log_history if "eval_macro_f1" in h}
    assert sorted(scores) == [2, 4, 6, 8, 9], "every 2 steps, and the last step"
    best = max(scores.values())
    assert res.selected_step == min(s for s, v in scores.items() if v == best)  # ties: the earlier checkpoint
    assert res.selected_dev_metric == pytest.approx(best)
    dev_logits = predict_logits(res.model, res.tokenizer, dev_texts, batch_size=8, max_length=16)
    assert classification_metrics(dev_labels, dev_logits.argmax(1))["macro_f1"] == pytest.approx(best)
    assert not (tmp_path / "run").exists(), "selection checkpoints are removed once training ends"


def test_no_dev_split_keeps_the_last_step(tmp_path, tiny_bert_dir):
    texts, labels, logits = _data()
    student = StudentConfig(model=str(tiny_bert_dir), method="full", max_length=16)
    res = train_student(student, _train_cfg(max_steps=3), texts, labels, logits, tmp_path / "run")
    assert res.selected_step == 3 and res.selected_dev_metric is None
    assert not any("eval_macro_f1" in h for h in res.log_history)


def test_label_smoothing_reaches_the_ce_term_of_training(tiny_bert_dir, tmp_path):
    texts, labels, _ = _data(16)
    student = StudentConfig(model=str(tiny_bert_dir), method="full", max_length=16)
    first = {}
    for eps in (0.0, 0.6):
        res = train_student(student, _train_cfg(max_steps=1, batch_size=16, label_smoothing=eps), texts, labels, None,
                            tmp_path / f"run{eps}")
        first[eps] = _losses(res.log_history, "ce_loss")[0]
    # same seed, same weights, same batch: only the target differs; a smoothed target (0.6, 0.2, 0.2) has entropy
    # 0.95, a lower bound of its cross-entropy (Gibbs)
    assert first[0.6] != pytest.approx(first[0.0], abs=1e-6) and first[0.6] >= 0.95
