"""distillation_loss: the KD/CE mix, T^2 scaling, row masks, and that only the student gets gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from findistill.losses import distillation_loss


def _manual_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Mean over rows of sum_c p_t * (log p_t - log p_s), written out by hand."""
    p_t = torch.softmax(teacher / t, dim=-1)
    return (p_t * (torch.log(p_t) - torch.log_softmax(student / t, dim=-1))).sum(-1).mean()


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 3, generator=g)
    teacher = torch.randn(6, 3, generator=g) * 2
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    return student, teacher, labels


def test_identical_logits_alpha_one_is_zero(batch):
    student, _, labels = batch
    loss, parts = distillation_loss(student, student.clone(), labels, alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_cross_entropy(batch):
    student, teacher, labels = batch
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.0, temperature=3.0)
    expected = F.cross_entropy(student, labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(parts["ce"], expected, atol=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_part_is_t_squared_times_kl(batch, t):
    student, teacher, labels = batch
    loss, parts = distillation_loss(student, teacher, labels, alpha=1.0, temperature=t)
    expected = t * t * _manual_kl(student, teacher, t)
    assert torch.allclose(parts["kd"], expected, atol=1e-5)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_mix_of_terms(batch):
    student, teacher, labels = batch
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0)
    expected = 0.3 * 4 * _manual_kl(student, teacher, 2.0) + 0.7 * F.cross_entropy(student, labels)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(loss, 0.3 * parts["kd"] + 0.7 * parts["ce"], atol=1e-6)


def test_gradients_reach_student_only(batch):
    student, teacher, labels = batch
    student = student.clone().requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None or teacher.grad.abs().sum() == 0
    assert not parts["kd"].requires_grad and not parts["ce"].requires_grad


def test_unlabelled_rows_get_kd_only(batch):
    student, teacher, _ = batch
    labels = torch.tensor([0, -1, 2, -1, 1, -1])
    gold = labels >= 0
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.4, temperature=2.0)
    kd = 4 * _manual_kl(student, teacher, 2.0)  # over all 6 rows
    ce = F.cross_entropy(student[gold], labels[gold])  # over the 3 labelled rows
    assert torch.allclose(parts["kd"], kd, atol=1e-5)
    assert torch.allclose(parts["ce"], ce, atol=1e-6)
    assert torch.allclose(loss, 0.4 * kd + 0.6 * ce, atol=1e-5)


def test_nan_teacher_rows_get_ce_only(batch):
    student, teacher, labels = batch
    teacher = teacher.clone()
    teacher[[1, 4]] = float("nan")
    has_t = ~torch.isnan(teacher).any(-1)
    student = student.clone().requires_grad_(True)
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    kd = 4 * _manual_kl(student[has_t], teacher[has_t], 2.0)
    assert torch.allclose(parts["kd"], kd, atol=1e-5)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_missing_terms_contribute_zero_without_renormalising(batch):
    student, teacher, labels = batch
    # No teacher at all: CE only, still weighted by (1 - alpha).
    loss, parts = distillation_loss(student, None, labels, alpha=0.25, temperature=2.0)
    assert parts["kd"].item() == 0.0
    assert torch.allclose(loss, 0.75 * F.cross_entropy(student, labels), atol=1e-6)
    # No gold label at all: KD only, weighted by alpha.
    none = torch.full_like(labels, -1)
    loss, parts = distillation_loss(student, teacher, none, alpha=0.25, temperature=1.0)
    assert parts["ce"].item() == 0.0
    assert torch.allclose(loss, 0.25 * _manual_kl(student, teacher, 1.0), atol=1e-6)
    # Neither: zero, and backward still works.
    s = student.clone().requires_grad_(True)
    loss, _ = distillation_loss(s, None, none, alpha=0.5, temperature=2.0)
    loss.backward()
    assert loss.item() == 0.0 and s.grad.abs().sum() == 0


def test_bf16_student_logits_computed_in_float32(batch):
    student, teacher, labels = batch
    loss, _ = distillation_loss(student.bfloat16(), teacher, labels, alpha=0.5, temperature=2.0)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_shape_mismatch_raises(batch):
    student, teacher, labels = batch
    with pytest.raises(ValueError):
        distillation_loss(student, teacher[:, :2], labels, alpha=0.5, temperature=2.0)
    with pytest.raises(ValueError):
        distillation_loss(student, teacher, labels[:3], alpha=0.5, temperature=2.0)
