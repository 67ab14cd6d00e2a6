"""The distillation loss: a pure function of student logits, teacher logits and gold labels.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, gold)

(CE optionally with label smoothing, ``label_smoothing``.)

Row masks decide which rows feed which term:

* the KD term averages (``batchmean``) over the rows that have teacher logits: ``teacher_logits`` is not
  ``None`` and the row has no NaN (a NaN row means "the teacher did not label this text");
* the CE term averages over the rows that have a gold label: ``labels >= 0`` (``-1`` means no gold label, as in
  transfer sets; ``-100``, the Hugging Face ignore index, is treated the same way).

If a batch has no row for a term, that term contributes 0 and the weights are **not** renormalised: a batch of
unlabelled rows gives ``alpha * kd`` only, not ``kd``. This keeps every batch on the same scale as the
configured mix, so alpha keeps its meaning across batches with different label coverage.

When a batch is one part of an optimizer step (one micro-batch of several accumulation steps, or one process's
share under DDP), the per-batch means above are not the step's means: a process holding 1 gold row of the step's 6
would weigh that row like the other process's 5 together. ``kd_count`` and ``ce_count`` give the term's row count over
the whole step (``loss_row_counts`` summed over its micro-batches and processes); each term is then this batch's sum
over its rows divided by that count, and the terms of the step's batches add up to the step's means. Without them
(the default) each term is the mean over this batch's rows.

The T^2 factor (Hinton et al., 2015) keeps the KD gradients' magnitude roughly independent of T. Teacher logits
are detached: gradients reach the student only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss", "loss_row_counts"]


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    alpha: float,
    temperature: float,
    *,
    kd_count: Tensor | float | None = None,
    ce_count: Tensor | float | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(loss, parts)`` for one batch.

    Args:
        student_logits: ``[B, C]`` student class logits (any float dtype; computed in float32).
        teacher_logits: ``[B, C]`` teacher class logits, NaN rows for texts without them; or ``None`` (CE only).
        labels: ``[B]`` long gold class ids; negative (``-1``) means no gold label (KD only).
        alpha: weight of the KD term in ``[0, 1]``; ``1 - alpha`` weighs the CE term.
        temperature: T > 0, softens both distributions of the KD term.
        kd_count: the number of rows the KD term is averaged over (rows with teacher logits in the whole optimizer
            step, at least this batch's); ``None``: this batch's.
        ce_count: the same for the CE term (rows with a gold label).
        label_smoothing: eps in ``[0, 1)``: the CE term's target puts ``1 - eps + eps / C`` on the gold class and
            ``eps / C`` on each other (``torch.nn.functional.cross_entropy``'s ``label_smoothing``); 0 = none.

    Returns:
        ``loss``: a scalar with a graph to ``student_logits``.
        ``parts``: detached scalars for logging, means over this batch's rows whatever the counts: ``"kd"`` = T^2 *
        KL (the KD term before the alpha weight) and ``"ce"`` = cross-entropy (before the ``1 - alpha`` weight); 0
        when the batch has no row for the term.
    """
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be [B, C], got shape {tuple(student_logits.shape)}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must be [B]={student_logits.shape[0]}, got shape {tuple(labels.shape)}")
    if teacher_logits is not None and teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits shape {tuple(teacher_logits.shape)} != student_logits shape {tuple(student_logits.shape)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    student = student_logits.float()  # [B, C]; float32 even under bf16 autocast
    # A zero that keeps the graph: backward() still works on a batch where a term (or both) has no rows.
    zero = student.sum() * 0.0  # []

    # ---- KD term over rows with teacher logits
    kd = kd_mean = zero
    if teacher_logits is not None:
        teacher = teacher_logits.detach().to(device=student.device, dtype=torch.float32)  # [B, C]
        has_teacher = _has_teacher(teacher)  # [B] bool
        rows = int(has_teacher.sum())
        if rows:
            s_log = F.log_softmax(student[has_teacher] / temperature, dim=-1)  # [Bt, C]
            t_log = F.log_softmax(teacher[has_teacher] / temperature, dim=-1)  # [Bt, C]
            # KL(p_teacher || p_student), summed over classes and over the Bt teacher rows (batchmean = this / Bt)
            kl_sum = F.kl_div(s_log, t_log, reduction="sum", log_target=True)  # []
            kd_mean = kl_sum / rows * (temperature**2)
            kd = kd_mean if kd_count is None else kl_sum / _checked(kd_count, rows, "kd_count") * (temperature**2)

    # ---- CE term over rows with a gold label
    ce = ce_mean = zero
    has_gold = _has_gold(labels.to(student.device))  # [B] bool
    rows = int(has_gold.sum())
    if rows:
        ce_sum = F.cross_entropy(student[has_gold], labels.to(student.device)[has_gold].long(), reduction="sum",
                                 label_smoothing=label_smoothing)
        ce_mean = ce_sum / rows
        ce = ce_mean if ce_count is None else ce_sum / _checked(ce_count, rows, "ce_count")

    loss = alpha * kd + (1.0 - alpha) * ce  # no renormalisation when a term has no rows
    return loss, {"kd": kd_mean.detach(), "ce": ce_mean.detach()}


def loss_row_counts(labels: Tensor, teacher_logits: Tensor | None) -> Tensor:
    """``[rows with teacher logits, rows with a gold label]`` of a batch (float32 ``[2]``, on ``labels``' device):
    the rows each term of :func:`distillation_loss` averages over. Summed over the batches of an optimizer step,
    they are its ``kd_count`` and ``ce_count``."""
    kd_rows = torch.zeros((), device=labels.device) if teacher_logits is None else (
        _has_teacher(teacher_logits.detach().to(labels.device)).sum())
    return torch.stack([kd_rows, _has_gold(labels).sum()]).float()


def _has_teacher(teacher_logits: Tensor) -> Tensor:
    """``[B]`` bool: the row has teacher logits (no NaN)."""
    return ~torch.isnan(teacher_logits).any(dim=-1)


def _has_gold(labels: Tensor) -> Tensor:
    """``[B]`` bool: the row has a gold label (``-1`` and ``-100`` mean none)."""
    return labels >= 0


def _checked(count: Tensor | float, rows: int, name: str) -> Tensor | float:
    if float(count) < rows:
        raise ValueError(f"{name} ({float(count):g}) is less than this batch's {rows} rows for the term")
    return count
