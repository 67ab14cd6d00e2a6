"""The one mapping from a model's output columns to the classes (``config.LABELS``), used by the classifier teacher,
the analysis of a saved model and the export's accuracy table.

A column maps by its label name (any case): a canonical name (negative / neutral / positive), or through
``label_map`` (model label name or column id -> canonical class), which also lets several columns share a class.
A model whose columns cannot all be placed, or that leaves a class without a column, is a :class:`ModelError`
naming its labels: generic names such as ``LABEL_0`` say nothing about which class is which, so they are never
guessed.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from findistill.config import LABEL2ID, LABELS
from findistill.errors import ModelError


NAME_THE_CLASSES = "name its classes in config.json (id2label)"  # the fix for a saved model read without a label map


def class_columns(id2label: Mapping[int, str], label_map: Mapping[str, str] | None = None,
                  where: str = "the model", fix: str = "give a label map") -> list[list[int]]:
    """``columns[c]``: the model's output columns that belong to canonical class ``c``; ``fix`` says in the error
    how a user maps the model's labels."""
    id2label = {int(i): str(name) for i, name in id2label.items()}
    names = ", ".join(id2label[j] for j in sorted(id2label))
    columns: list[list[int]] = [[] for _ in LABELS]
    for i in sorted(id2label):
        name = id2label[i]
        if label_map:
            target = label_map.get(name, label_map.get(str(i)))
            if target is None:
                raise ModelError(f"label {name!r} (id {i}) of {where} is not in the label map (model labels: {names})")
            target = str(target).lower()
        else:
            target = name.lower()
        if target not in LABEL2ID:
            hint = "" if label_map else f"; {fix} to map them onto {', '.join(LABELS)}"
            raise ModelError(f"{where} has labels {names}, which are not {', '.join(LABELS)}{hint}")
        columns[LABEL2ID[target]].append(i)
    empty = [LABELS[c] for c, cols in enumerate(columns) if not cols]
    if empty:
        raise ModelError(f"no label of {where} maps to class {', '.join(empty)} (model labels: {names})")
    return columns


def canonical_logits(logits: np.ndarray, columns: list[list[int]]) -> np.ndarray:
    """``[N, len(LABELS)]`` class logits from a model's ``[N, C]`` logits: a class owning several columns gets their
    log-sum-exp (its total probability, up to a constant); a class with one column gets that column unchanged."""
    logits = np.asarray(logits)
    out = []
    for cols in columns:
        if len(cols) == 1:
            out.append(logits[:, cols[0]])
        else:
            part = logits[:, cols].astype(np.float64)
            top = part.max(axis=1, keepdims=True)
            out.append((top[:, 0] + np.log(np.exp(part - top).sum(axis=1))).astype(logits.dtype))
    return np.stack(out, axis=1) if out else np.zeros((len(logits), 0), dtype=logits.dtype)
