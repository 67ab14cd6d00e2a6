"""distillation_loss: the KD/CE mix, T^2 scaling, row masks, and that only the student gets gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from findistill.training.losses import distillation_loss, loss_row_counts


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


def test_without_counts_the_terms_are_the_batch_means_as_before(batch):
    """kd_count / ce_count equal to the batch's own rows (one process, no accumulation) change nothing, to the bit."""
    student, teacher, _ = batch
    teacher = teacher.clone()
    teacher[2] = float("nan")
    labels = torch.tensor([0, -1, 2, -1, -1, 0])
    plain, plain_parts = distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0)
    kd_rows, gold_rows = loss_row_counts(labels, teacher)
    assert (kd_rows.item(), gold_rows.item()) == (5.0, 3.0)
    counted, parts = distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0,
                                       kd_count=kd_rows, ce_count=gold_rows)
    assert counted.item() == plain.item()
    assert parts["kd"].item() == plain_parts["kd"].item() and parts["ce"].item() == plain_parts["ce"].item()
    # the batchmean of the KD term and the gold-row mean of the CE term, written out
    has_t, gold = ~torch.isnan(teacher).any(-1), labels >= 0
    expected = 0.3 * 4 * _manual_kl(student[has_t], teacher[has_t], 2.0) + 0.7 * F.cross_entropy(student[gold],
                                                                                                 labels[gold])
    assert torch.allclose(plain, expected, atol=1e-5)
    assert loss_row_counts(labels, None).tolist() == [0.0, 3.0]


def test_parts_with_the_whole_step_counts_add_up_to_the_whole_batch():
    """A step split into parts with different numbers of gold rows (processes, accumulation micro-batches): with the
    step's counts the parts' losses and gradients add up to the whole batch's; per-part means do not."""
    g = torch.Generator().manual_seed(1)
    student = torch.randn(8, 3, generator=g, requires_grad=True)
    teacher = torch.randn(8, 3, generator=g) * 2
    teacher[5] = float("nan")  # a gold row without teacher logits
    labels = torch.tensor([0, 2, 1, 1, 2, 0, -1, -1])  # parts [0:4] and [4:8]: 4 and 2 gold rows, 4 and 3 KD rows
    whole, _ = distillation_loss(student, teacher, labels, alpha=0.4, temperature=3.0)
    (whole_grad,) = torch.autograd.grad(whole, student)

    parts = [slice(0, 4), slice(4, 8)]
    kd_count, ce_count = sum(loss_row_counts(labels[p], teacher[p]) for p in parts)
    assert (kd_count.item(), ce_count.item()) == (7.0, 6.0)
    summed = sum(distillation_loss(student[p], teacher[p], labels[p], alpha=0.4, temperature=3.0,
                                   kd_count=kd_count, ce_count=ce_count)[0] for p in parts)
    (summed_grad,) = torch.autograd.grad(summed, student)
    assert torch.allclose(summed, whole, atol=1e-6)
    assert torch.allclose(summed_grad, whole_grad, atol=1e-6)

    averaged = sum(distillation_loss(student[p], teacher[p], labels[p], alpha=0.4, temperature=3.0)[0]
                   for p in parts) / 2
    assert abs(averaged.item() - whole.item()) > 1e-3  # why the counts are needed
    # a part with no row for a term contributes 0 to it, and a count below the part's rows is refused
    none = torch.full((4,), -1)
    loss, parts_ = distillation_loss(student[:4], None, none, alpha=0.4, temperature=3.0, kd_count=0.0, ce_count=6.0)
    assert loss.item() == 0.0 and parts_["ce"].item() == 0.0
    with pytest.raises(ValueError, match="ce_count"):
        distillation_loss(student[:4], teacher[:4], labels[:4], alpha=0.4, temperature=3.0, kd_count=7.0,
                          ce_count=3.0)


def test_label_smoothing_is_cross_entropy_against_the_smoothed_target_on_gold_rows_only(batch):
    student, teacher, labels = batch
    labels = labels.clone()
    labels[:2] = -1  # transfer rows: no gold label, so no smoothing either
    eps, c = 0.2, student.shape[1]
    target = torch.full((4, c), eps / c)  # written out by hand: 1 - eps + eps/C on gold, eps/C elsewhere
    target[torch.arange(4), labels[2:]] += 1 - eps
    expected_ce = -(target * torch.log_softmax(student[2:], dim=-1)).sum(-1).mean()
    loss, parts = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0, label_smoothing=eps)
    assert parts["ce"].item() == pytest.approx(expected_ce.item(), abs=1e-6)
    plain, plain_parts = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    assert parts["kd"].item() == pytest.approx(plain_parts["kd"].item())  # the KD term is untouched
    assert loss.item() == pytest.approx(0.5 * plain_parts["kd"].item() + 0.5 * expected_ce.item(), abs=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0, label_smoothing=1.0)
