"""The eager ``transformers`` backend of a prompted LM teacher (the reference)."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import TeacherConfig
from findistill.errors import ModelError
from findistill.models.inference import run_batches
from findistill.models.student import count_parameters

from findistill.teachers.backends.base import LMBackend
from findistill.teachers.base import load_teacher_model


class HFBackend(LMBackend):
    """Eager ``transformers`` forward passes: one per batch of similar-length, left-padded prompts (the reference)."""

    name = "hf"

    def __init__(self, cfg: TeacherConfig, model: torch.nn.Module | None = None, tokenizer: Any = None,
                 device: str | torch.device | None = None):
        from transformers import AutoModelForCausalLM

        self.cfg = cfg
        self.model, self.tokenizer, self.device, self.content_digest = load_teacher_model(
            cfg, AutoModelForCausalLM, model, tokenizer, device
        )
        self.num_parameters = count_parameters(self.model)[0]
        self.dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        self.forward_passes = 0  # batches run through the model (tests and caches check it)
        params = inspect.signature(self.model.forward).parameters
        self.keeps_last = "logits_to_keep" in params
        self._takes_positions = "position_ids" in params

    def pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Left-pad ``rows`` into ``input_ids`` / ``attention_mask`` (and ``position_ids``), all ``[B, L]``."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        batch = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self._takes_positions:
            # Real tokens count positions from 0 whatever the padding (matters for absolute position embeddings).
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        return batch

    @torch.inference_mode()
    def last_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits at the last position, ``[B, V]`` float32 (left padding: it is every row's end)."""
        if self.model is None:
            raise ModelError(f"teacher {self.cfg.display_name} was released; build it again to compute logits")
        if self.keeps_last:
            out = self.model(**batch, use_cache=False, logits_to_keep=1)  # logits [B, 1, V]
        else:
            out = self.model(**batch, use_cache=False)  # logits [B, L, V]
        self.forward_passes += 1
        return out.logits[:, -1, :].float()

    def token_logprobs(self, prompts: Sequence[list[int]], token_ids: Sequence[int], batch_size: int,
                       progress: bool = True, desc: str = "teacher") -> np.ndarray:
        columns = torch.tensor(list(token_ids), dtype=torch.long)

        def forward(idx: np.ndarray) -> np.ndarray:
            logits = self.last_logits(self.pad([prompts[i] for i in idx]))  # [B, V]
            log_probs = torch.log_softmax(logits, dim=-1)  # [B, V]
            return log_probs[:, columns.to(log_probs.device)].cpu().numpy()  # [B, K]

        return run_batches([len(p) for p in prompts], batch_size, len(columns), forward, progress=progress, desc=desc)

    def release(self) -> None:
        if self.model is None:
            return
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
