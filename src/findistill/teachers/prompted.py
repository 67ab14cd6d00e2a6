"""A causal LM teacher read through label words: the task (prompt, few-shot, verbalizer) over a backend."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import LABELS, TeacherConfig
from findistill.errors import ModelError
from findistill.teachers.prompts import build_prompt, uses_chat_template, verbalizer_token_ids

from findistill.teachers.backends import BACKENDS
from findistill.teachers.backends.base import LMBackend
from findistill.teachers.base import Teacher

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- prompted LM


class PromptedLMTeacher(Teacher):
    """A causal LM read at the end of a prompt: class logit = logsumexp of its label words' next-token log-probs.

    The task (prompt, few-shot examples, chat template, verbalizer, left cut to ``max_length``) lives here; the
    engine that runs it is ``self.backend`` (``teacher.backend``: hf or vllm). A ``model`` passed in is an
    in-memory torch module, so it always runs on hf.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        few_shot: Sequence[tuple[str, int]] = (),
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
    ):
        self.cfg = cfg
        self.name = cfg.display_name
        self.few_shot = [(str(t), int(y)) for t, y in few_shot]
        backend = "hf" if model is not None else cfg.backend
        if backend not in BACKENDS:
            raise ModelError(f"unknown teacher backend {backend!r} (known: {', '.join(BACKENDS)})")
        self.backend: LMBackend = BACKENDS[backend](cfg, model=model, tokenizer=tokenizer, device=device)
        self.tokenizer = self.backend.tokenizer
        self.num_parameters = self.backend.num_parameters
        self._content_digest = self.backend.content_digest
        self._dtype = self.backend.dtype
        self.tokenizer.padding_side = "left"
        self.chat = uses_chat_template(self.tokenizer, cfg)
        # Per class (LABELS order), the label words' first-token ids.
        self.label_token_ids = verbalizer_token_ids(self.tokenizer, cfg.verbalizer)

    # The hf backend's pieces under their old names (teacher_finetune and tests use them).
    @property
    def model(self) -> Any:
        return getattr(self.backend, "model", None)

    @model.setter
    def model(self, value: Any) -> None:
        if value is not None:
            raise ValueError("a teacher's model can only be released (set to None)")
        self.backend.release()

    @property
    def device(self) -> torch.device | None:
        return getattr(self.backend, "device", None)

    @device.setter
    def device(self, value: torch.device) -> None:
        self.backend.device = value

    @property
    def forward_passes(self) -> int:
        return int(getattr(self.backend, "forward_passes", 0))

    @property
    def keeps_last(self) -> bool:
        return bool(getattr(self.backend, "keeps_last", False))

    def pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return self.backend.pad(rows)  # type: ignore[attr-defined]

    def prompt(self, text: str) -> str:
        return build_prompt(self.tokenizer, self.cfg, text, self.few_shot)

    def _encode(self, text: str) -> tuple[list[int], bool]:
        """(token ids of the prompt for ``text``, whether they were cut to ``max_length``)."""
        ids = self.tokenizer.encode(self.prompt(text), add_special_tokens=not self.chat)
        limit = self.cfg.max_length
        if len(ids) <= limit:
            return ids, False
        bos = self.tokenizer.bos_token_id
        return (ids[:1] + ids[len(ids) - limit + 1 :] if bos is not None and ids[0] == bos else ids[-limit:]), True

    def encode(self, text: str) -> list[int]:
        """Token ids of the prompt for ``text``, cut to ``max_length`` keeping the end (the answer cue).

        A chat template writes its own special tokens, so none are added then. When a cut is needed, a leading
        BOS token is kept and the tokens right after it are dropped.
        """
        return self._encode(text)[0]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for every text; one warning (with the count) when any prompt had to be cut."""
        pairs = [self._encode(t) for t in texts]
        cut = sum(1 for _, was_cut in pairs if was_cut)
        if cut:
            log.warning("teacher %s: %d of %d prompts are longer than teacher.max_length (%d tokens) and were cut "
                        "from the left, so their start (instruction, few-shot examples or chat header) is lost; "
                        "raise teacher.max_length", self.name, cut, len(pairs), self.cfg.max_length)
        return [ids for ids, _ in pairs]

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        result = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        if not texts:
            return result
        encoded = self.encode_all(texts)
        flat = list(dict.fromkeys(t for ids in self.label_token_ids for t in ids))  # every label token once
        log_probs = torch.from_numpy(self.backend.token_logprobs(
            encoded, flat, self.cfg.batch_size, progress=progress, desc=f"teacher {self.name}"))  # [N, K]
        column = {t: k for k, t in enumerate(flat)}
        per_class = [torch.logsumexp(log_probs[:, [column[t] for t in ids]], dim=-1)
                     for ids in self.label_token_ids]  # 3 x [N]; the class logits are log-probs
        result[:] = torch.stack(per_class, dim=-1).numpy()  # [N, 3]
        return result

    def release(self) -> None:
        self.backend.release()

    def fingerprint(self) -> dict:
        return {
            **self._model_identity(),
            "prompt": self.cfg.prompt,
            "system_prompt": self.cfg.system_prompt,
            "chat_template": self.tokenizer.chat_template if self.chat else None,
            "verbalizer": {k: list(self.cfg.verbalizer[k]) for k in LABELS},
            "label_token_ids": self.label_token_ids,
            "few_shot": [[t, y] for t, y in self.few_shot],
            "max_length": self.cfg.max_length,
            **self.backend.identity(),  # hf adds nothing: caches written before the backend seam stay valid
        }
