"""Teachers: texts -> ``[N, 3]`` float32 class logits in the canonical order ``config.LABELS``.

* :class:`PromptedLMTeacher` — a causal LM read through label words (no generation): the task (prompt, few-shot
  examples, chat template, verbalizer) gives token-id prompts; a backend (``teacher.backend``, see ``BACKENDS``)
  returns the next-token log-probabilities of the label-word tokens; per class, the log-sum-exp over its tokens.
  :class:`HFBackend` runs eager ``transformers`` forward passes (the reference), :class:`VLLMBackend` a vLLM engine.
* :class:`ClassifierTeacher` — any ``AutoModelForSequenceClassification``, its columns mapped onto the classes.
* :class:`EnsembleTeacher` — the mean of its members' probabilities (returned as log-probabilities).

``fingerprint()`` is a JSON-able identity of everything that changes the logits; :mod:`findistill.teachers.cache` keys on it.

This module holds the interface and the loading every teacher kind shares.
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import TeacherConfig
from findistill.errors import ModelError, first_line
from findistill.models.inference import ensure_pad_token
from findistill.models.refs import resolve_model


FINGERPRINT_VERSION = 1
from findistill.models.devices import pick_device, pick_dtype


def folder_digest(path: str) -> str | None:
    """Cheap digest of a local model folder (sizes, head/tail bytes of its files): None for hub ids.

    Lets the cache notice that a local folder now holds another model."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.suffix not in {".safetensors", ".bin", ".json", ".model", ".gguf"}:
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(65536))
            fh.seek(max(65536, size - 65536))
            digest.update(fh.read(65536))
    return digest.hexdigest()


def checked_tokenizer(cfg: TeacherConfig, resolved: str, tokenizer: Any) -> tuple[str | None, Any]:
    """(revision to load ``resolved`` with, the caller's tokenizer or the one of ``resolved``); a missing local
    folder or an unloadable tokenizer is one-line ``ModelError``."""
    revision = None if Path(resolved).is_dir() else cfg.revision
    if resolved.startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().is_dir():
        raise ModelError(f"teacher model folder not found: {resolved}")
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
        except Exception as err:
            raise ModelError(f"cannot load the tokenizer of teacher {cfg.model!r}: {first_line(err)}") from None
    return revision, tokenizer


def _placement(cfg: TeacherConfig, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` keywords: the dtype, and for a big teacher its device map and bitsandbytes quantization."""
    from findistill.distributed import rank_world

    kwargs: dict[str, Any] = {"dtype": pick_dtype(cfg.dtype, device)}
    if cfg.device_map is not None:
        if rank_world()[1] > 1:
            raise ModelError("teacher.device_map spreads one teacher over every visible GPU, which the processes of "
                             "accelerate launch would share; label in one process (findistill label, no launcher), "
                             "then train under accelerate launch: the labels come from the cache")
        kwargs["device_map"] = cfg.device_map
    if cfg.quantization != "none":
        import importlib.util

        if not torch.cuda.is_available():
            raise ModelError(f"teacher.quantization {cfg.quantization}: bitsandbytes loading needs a CUDA GPU and "
                             "none is visible; set teacher.quantization: none")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError(f"teacher.quantization {cfg.quantization} needs the bitsandbytes package "
                             "(pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True) if cfg.quantization == "8bit" else
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]))
        kwargs.setdefault("device_map", {"": device})  # quantized weights load straight onto the GPU
    return kwargs


def load_teacher_model(
    cfg: TeacherConfig, auto_class: Any, model: Any, tokenizer: Any, device: str | torch.device | None
) -> tuple[Any, Any, torch.device, str | None]:
    """(model in eval mode on its device, tokenizer with a pad token, device, content digest of a local folder).

    A ``model`` / ``tokenizer`` given by the caller is used as is (moved to ``device`` when one is given). A model
    placed as it loaded (``teacher.device_map``, quantization) stays where it is; its inputs go to the device of
    its input embeddings, and accelerate's hooks carry the activations from device to device.
    """
    resolved = cfg.model if model is not None and tokenizer is not None else resolve_model(cfg.model, cfg.revision)
    revision, tokenizer = checked_tokenizer(cfg, resolved, tokenizer)
    if model is None:
        device = pick_device(device)
        placement = _placement(cfg, device)
        try:
            model = auto_class.from_pretrained(resolved, revision=revision, **placement)
        except Exception as err:
            raise ModelError(f"cannot load teacher model {cfg.model!r}: {first_line(err)}") from None
    else:
        device = pick_device(device) if device is not None else next(model.parameters()).device
    if getattr(model, "hf_device_map", None) is None:
        model.to(device)
    else:
        device = model.get_input_embeddings().weight.device
    ensure_pad_token(tokenizer, model, owner=f"teacher {cfg.model!r}")
    return model.eval(), tokenizer, device, folder_digest(resolved)


# --------------------------------------------------------------------------------------------- interface


class Teacher(abc.ABC):
    """Anything that turns texts into ``[N, 3]`` class logits (canonical order) and can name its identity."""

    name: str
    num_parameters: int

    @abc.abstractmethod
    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """``[N, 3]`` float32 logits in ``LABELS`` order."""

    @abc.abstractmethod
    def fingerprint(self) -> dict:
        """JSON-able identity: everything that changes the logits (used as the cache key)."""

    def release(self) -> None:
        """Free the model weights (later ``class_logits`` calls raise); a no-op for teachers without any."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _model_identity(self) -> dict:
        """The fingerprint entries of a teacher that loads one model (``cfg``, ``_content_digest``, ``_dtype``)."""
        return {
            "version": FINGERPRINT_VERSION,
            "class": type(self).__name__,
            "model": self.cfg.model,
            "revision": self.cfg.revision,
            "content_digest": self._content_digest,
            "dtype": self._dtype,
            # quantized weights give other logits (absent when none: older fingerprints, and caches, stay valid)
            **({"quantization": self.cfg.quantization} if self.cfg.quantization != "none" else {}),
        }

    def _require_model(self) -> torch.nn.Module:
        if getattr(self, "model", None) is None:
            raise ModelError(f"teacher {self.name} was released; build it again to compute logits")
        return self.model
