"""An ensemble teacher: the mean of its members' probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from findistill.config import LABELS
from findistill.errors import ModelError

from findistill.teachers.base import FINGERPRINT_VERSION, Teacher


# --------------------------------------------------------------------------------------------- ensemble


class EnsembleTeacher(Teacher):
    """Mean of the members' softmax probabilities; logits are the log of that mean (``[N, 3]``)."""

    def __init__(self, members: list[Teacher], name: str | None = None):
        if not members:
            raise ModelError("an ensemble teacher needs at least one member")
        self.members = list(members)
        self.name = name or "ensemble(" + " + ".join(m.name for m in self.members) + ")"
        self.num_parameters = int(sum(m.num_parameters for m in self.members))

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        probs = np.zeros((len(texts), len(LABELS)), dtype=np.float64)  # [N, 3]
        for member in self.members:
            logits = torch.from_numpy(np.asarray(member.class_logits(texts, progress=progress), dtype=np.float64))
            probs += torch.softmax(logits, dim=-1).numpy()  # [N, 3]
        probs /= len(self.members)
        return np.log(np.clip(probs, 1e-30, None)).astype(np.float32)  # [N, 3]

    def fingerprint(self) -> dict:
        members = [m.fingerprint() for m in self.members]
        return {"version": FINGERPRINT_VERSION, "class": type(self).__name__, "members": members}

    def release(self) -> None:
        for member in self.members:
            member.release()
