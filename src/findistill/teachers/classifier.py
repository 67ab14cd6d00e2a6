"""A sequence-classifier teacher, its output columns mapped onto the classes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import LABELS, TeacherConfig
from findistill.models.inference import predict_texts
from findistill.models.student import count_parameters

from findistill.models.labels import class_columns
from findistill.teachers.base import Teacher, load_teacher_model


# --------------------------------------------------------------------------------------------- classifier


class ClassifierTeacher(Teacher):
    """An ``AutoModelForSequenceClassification`` whose label columns are mapped onto the canonical classes."""

    def __init__(
        self,
        cfg: TeacherConfig,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
    ):
        self.cfg = cfg
        self.name = cfg.display_name
        self.forward_passes = 0
        from transformers import AutoModelForSequenceClassification

        self.model, self.tokenizer, self.device, self._content_digest = load_teacher_model(
            cfg, AutoModelForSequenceClassification, model, tokenizer, device
        )
        self.num_parameters = count_parameters(self.model)[0]
        self._dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        # columns[c] = the model's output columns that belong to canonical class c.
        self.columns = self._map_columns()

    def _map_columns(self) -> list[list[int]]:
        return class_columns(self.model.config.id2label, self.cfg.label_map, where=f"classifier {self.cfg.model!r}",
                             fix="set teacher.label_map")

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        model = self._require_model()

        def forward(batch: Any) -> np.ndarray:
            logits = model(**batch.to(self.device)).logits.float()  # [B, num_labels]
            self.forward_passes += 1
            # A class owning several columns gets their log-sum-exp (its total probability, up to a constant).
            per_class = [torch.logsumexp(logits[:, cols], dim=-1) for cols in self.columns]  # 3 x [B]
            return torch.stack(per_class, dim=-1).cpu().numpy()  # [B, 3]

        with torch.inference_mode():
            return predict_texts(self.tokenizer, texts, self.cfg.max_length, self.cfg.batch_size, len(LABELS),
                                 forward, return_tensors="pt", progress=progress, desc=f"teacher {self.name}")

    def fingerprint(self) -> dict:
        return {
            **self._model_identity(),
            "label_map": {LABELS[c]: cols for c, cols in enumerate(self.columns)},
            "max_length": self.cfg.max_length,
        }
