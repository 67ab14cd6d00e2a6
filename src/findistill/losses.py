"""The distillation loss: a pure function of student logits, teacher logits and gold labels.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, gold)

Row masks decide which rows feed which term:

* the KD term averages (``batchmean``) over the rows that have teacher logits: ``teacher_logits`` is not
  ``None`` and the row has no NaN (a NaN row means "the teacher did not label this text");
* the CE term averages over the rows that have a gold label: ``labels >= 0`` (``-1`` means no gold label, as in
  transfer sets; ``-100``, the Hugging Face ignore index, is treated the same way).

If a batch has no row for a term, that term contributes 0 and the weights are **not** renormalised: a batch of
unlabelled rows gives ``alpha * kd`` only, not ``kd``. This keeps every batch on the same scale as the
configured mix, so alpha keeps its meaning across batches with different label coverage.

The T^2 factor (Hinton et al., 2015) keeps the KD gradients' magnitude roughly independent of T. Teacher logits
are detached: gradients reach the student only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss"]


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    alpha: float,
    temperature: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(loss, parts)`` for one batch.

    Args:
        student_logits: ``[B, C]`` student class logits (any float dtype; computed in float32).
        teacher_logits: ``[B, C]`` teacher class logits, NaN rows for texts without them; or ``None`` (CE only).
        labels: ``[B]`` long gold class ids; negative (``-1``) means no gold label (KD only).
        alpha: weight of the KD term in ``[0, 1]``; ``1 - alpha`` weighs the CE term.
        temperature: T > 0, softens both distributions of the KD term.

    Returns:
        ``loss``: a scalar with a graph to ``student_logits``.
        ``parts``: detached scalars for logging: ``"kd"`` = T^2 * KL (the KD term before the alpha weight) and
        ``"ce"`` = cross-entropy (before the ``1 - alpha`` weight); 0 when the batch has no row for the term.
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

    student = student_logits.float()  # [B, C]; float32 even under bf16 autocast
    # A zero that keeps the graph: backward() still works on a batch where a term (or both) has no rows.
    zero = student.sum() * 0.0  # []

    # ---- KD term over rows with teacher logits
    kd = zero
    if teacher_logits is not None:
        teacher = teacher_logits.detach().to(device=student.device, dtype=torch.float32)  # [B, C]
        has_teacher = ~torch.isnan(teacher).any(dim=-1)  # [B] bool
        if bool(has_teacher.any()):
            s_log = F.log_softmax(student[has_teacher] / temperature, dim=-1)  # [Bt, C]
            t_log = F.log_softmax(teacher[has_teacher] / temperature, dim=-1)  # [Bt, C]
            # KL(p_teacher || p_student), summed over classes, averaged over the Bt teacher rows.
            kl = F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)  # []
            kd = kl * (temperature**2)

    # ---- CE term over rows with a gold label
    ce = zero
    has_gold = labels.to(student.device) >= 0  # [B] bool
    if bool(has_gold.any()):
        ce = F.cross_entropy(student[has_gold], labels.to(student.device)[has_gold].long())  # []

    loss = alpha * kd + (1.0 - alpha) * ce  # no renormalisation when a term has no rows
    return loss, {"kd": kd.detach(), "ce": ce.detach()}
