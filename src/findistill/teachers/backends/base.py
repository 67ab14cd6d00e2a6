"""Engines that run a prompted LM teacher: ``BACKENDS`` maps ``teacher.backend`` to one."""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from findistill.config import TeacherConfig
from findistill.models.inference import ensure_pad_token
from findistill.models.refs import resolve_model

from findistill.teachers.base import checked_tokenizer


# --------------------------------------------------------------------------------------------- LM backends


def load_tokenizer(cfg: TeacherConfig, tokenizer: Any = None) -> tuple[str, Any]:
    """(resolved model reference, tokenizer with a pad token): the tokenizer every backend builds prompts with."""
    resolved = resolve_model(cfg.model, cfg.revision)
    _, tokenizer = checked_tokenizer(cfg, resolved, tokenizer)
    ensure_pad_token(tokenizer, owner=f"teacher {cfg.model!r}")
    return resolved, tokenizer


class LMBackend(abc.ABC):
    """An engine that runs a causal LM on token-id prompts (built by :class:`PromptedLMTeacher`, the task).

    The task (prompt template, few-shot examples, chat template, verbalizer, left cut) is the same for every
    backend; a backend only turns token ids into next-token log-probabilities (and, for paraphrasing, text).
    """

    name: str
    tokenizer: Any
    num_parameters: int
    dtype: str
    content_digest: str | None = None

    @abc.abstractmethod
    def token_logprobs(self, prompts: Sequence[list[int]], token_ids: Sequence[int], batch_size: int,
                       progress: bool = True, desc: str = "teacher") -> np.ndarray:
        """``[N, K]`` float32: log P(next token = ``token_ids[k]`` | ``prompts[n]``), normalised over the vocabulary."""

    def identity(self) -> dict:
        """Fingerprint entries of the engine (empty for hf: a teacher fingerprint without "backend" is hf)."""
        return {}

    @abc.abstractmethod
    def release(self) -> None:
        """Free the weights (a later call raises :class:`ModelError`)."""
