"""A model's logits on the evaluation split, saved as ``predictions/<role>.npz`` in a run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Prediction:
    """Logits of one model on the evaluation split, plus what the results table needs about it."""

    name: str
    role: str
    logits: np.ndarray  # [N, 3] float32, canonical class order
    meta: dict
    holdout_logits: np.ndarray | None = None  # [M, 3] on the held-out transfer texts (fidelity), when there are any

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        arrays = {} if self.holdout_logits is None else {"holdout_logits": self.holdout_logits}
        np.savez(tmp, logits=self.logits, meta=json.dumps({"name": self.name, "role": self.role, **self.meta}),
                 **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Prediction":
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            holdout = data["holdout_logits"] if "holdout_logits" in data.files else None
            return cls(meta.pop("name"), meta.pop("role"), data["logits"], meta, holdout)
