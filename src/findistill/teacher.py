"""Teachers: texts -> ``[N, 3]`` float32 class logits in the canonical order ``config.LABELS``.

* :class:`PromptedLMTeacher` — a causal LM read through label words: one forward pass per batch (no generation),
  the next-token logits at the last prompt position, per class the log-sum-exp over its label-word token ids.
* :class:`ClassifierTeacher` — any ``AutoModelForSequenceClassification``, its columns mapped onto the classes.
* :class:`EnsembleTeacher` — the mean of its members' probabilities (returned as log-probabilities).

``fingerprint()`` is a JSON-able identity of everything that changes the logits; :mod:`findistill.cache` keys on it.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from findistill.config import LABEL2ID, LABELS, TeacherConfig
from findistill.errors import DataError, ModelError
from findistill.prompts import build_prompt, select_few_shot, uses_chat_template, verbalizer_token_ids

FINGERPRINT_VERSION = 1


# --------------------------------------------------------------------------------------------- helpers


def _resolve(ref: str, revision: str | None = None) -> str:
    """``ref`` as something ``from_pretrained`` takes (via ``model_refs.resolve_model`` when that module exists)."""
    try:
        from findistill.model_refs import resolve_model
    except ImportError:
        return ref
    return resolve_model(ref, revision=revision)


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _folder_digest(path: str) -> str | None:
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


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar length, longest first (an out-of-memory error shows up on the first batch)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _load(
    cfg: TeacherConfig, auto_class: Any, model: Any, tokenizer: Any, device: str | torch.device | None
) -> tuple[Any, Any, torch.device, str | None]:
    """(model in eval mode on its device, tokenizer with a pad token, device, content digest of a local folder).

    A ``model`` / ``tokenizer`` given by the caller is used as is (moved to ``device`` when one is given).
    """
    resolved = cfg.model if model is not None and tokenizer is not None else _resolve(cfg.model, cfg.revision)
    revision = None if Path(resolved).is_dir() else cfg.revision
    if resolved.startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().is_dir():
        raise ModelError(f"teacher model folder not found: {resolved}")
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
        except Exception as err:
            raise ModelError(f"cannot load the tokenizer of teacher {cfg.model!r}: {_one_line(err)}") from None
    if model is None:
        device = _pick_device(device)
        try:
            model = auto_class.from_pretrained(resolved, revision=revision, dtype=_pick_dtype(cfg.dtype, device))
        except Exception as err:
            raise ModelError(f"cannot load teacher model {cfg.model!r}: {_one_line(err)}") from None
    else:
        device = _pick_device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"tokenizer of teacher {cfg.model!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, device, _folder_digest(resolved)


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

    def _require_model(self) -> torch.nn.Module:
        if getattr(self, "model", None) is None:
            raise ModelError(f"teacher {self.name} was released; build it again to compute logits")
        return self.model


# --------------------------------------------------------------------------------------------- prompted LM


class PromptedLMTeacher(Teacher):
    """A causal LM read at the end of a prompt: class logit = logsumexp of its label words' next-token logits."""

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
        self.forward_passes = 0  # batches run through the model (tests and caches check it)
        from transformers import AutoModelForCausalLM

        self.model, self.tokenizer, self.device, self._content_digest = _load(
            cfg, AutoModelForCausalLM, model, tokenizer, device
        )
        self.num_parameters = count_parameters(self.model)
        self._dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        self.tokenizer.padding_side = "left"
        self.chat = uses_chat_template(self.tokenizer, cfg)
        # Per class (LABELS order), the label words' first-token ids.
        self.label_token_ids = verbalizer_token_ids(self.tokenizer, cfg.verbalizer)
        params = inspect.signature(self.model.forward).parameters
        self._keeps_last = "logits_to_keep" in params
        self._takes_positions = "position_ids" in params

    def prompt(self, text: str) -> str:
        return build_prompt(self.tokenizer, self.cfg, text, self.few_shot)

    def encode(self, text: str) -> list[int]:
        """Token ids of the prompt for ``text``, cut to ``max_length`` keeping the end (the answer cue).

        A chat template writes its own special tokens, so none are added then. When a cut is needed, a leading
        BOS token is kept and the tokens right after it are dropped.
        """
        ids = self.tokenizer.encode(self.prompt(text), add_special_tokens=not self.chat)
        limit = self.cfg.max_length
        if len(ids) > limit:
            bos = self.tokenizer.bos_token_id
            ids = ids[:1] + ids[len(ids) - limit + 1 :] if bos is not None and ids[0] == bos else ids[-limit:]
        return ids

    def _pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
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
    def _last_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits at the last position, ``[B, V]`` float32 (left padding: it is every row's end)."""
        model = self._require_model()
        if self._keeps_last:
            out = model(**batch, use_cache=False, logits_to_keep=1)  # logits [B, 1, V]
        else:
            out = model(**batch, use_cache=False)  # logits [B, L, V]
        self.forward_passes += 1
        return out.logits[:, -1, :].float()

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        result = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        if not texts:
            return result
        encoded = [self.encode(t) for t in texts]
        bar = tqdm(total=len(texts), desc=f"teacher {self.name}", disable=not progress, unit="text")
        with bar:
            for idx in _sorted_batches([len(e) for e in encoded], self.cfg.batch_size):
                logits = self._last_logits(self._pad([encoded[i] for i in idx]))  # [B, V]
                log_probs = torch.log_softmax(logits, dim=-1)  # [B, V]; the class logits are then log-probs
                per_class = [torch.logsumexp(log_probs[:, ids], dim=-1) for ids in self.label_token_ids]  # 3 x [B]
                result[idx] = torch.stack(per_class, dim=-1).cpu().numpy()  # [B, 3]
                bar.update(len(idx))
        return result

    def fingerprint(self) -> dict:
        return {
            "version": FINGERPRINT_VERSION,
            "class": type(self).__name__,
            "model": self.cfg.model,
            "revision": self.cfg.revision,
            "content_digest": self._content_digest,
            "dtype": self._dtype,
            "prompt": self.cfg.prompt,
            "system_prompt": self.cfg.system_prompt,
            "chat_template": self.tokenizer.chat_template if self.chat else None,
            "verbalizer": {k: list(self.cfg.verbalizer[k]) for k in LABELS},
            "label_token_ids": self.label_token_ids,
            "few_shot": [[t, y] for t, y in self.few_shot],
            "max_length": self.cfg.max_length,
        }


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

        self.model, self.tokenizer, self.device, self._content_digest = _load(
            cfg, AutoModelForSequenceClassification, model, tokenizer, device
        )
        self.num_parameters = count_parameters(self.model)
        self._dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        # columns[c] = the model's output columns that belong to canonical class c.
        self.columns = self._map_columns()

    def _map_columns(self) -> list[list[int]]:
        id2label = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        label_map, names = self.cfg.label_map, ", ".join(id2label[j] for j in sorted(id2label))
        columns: list[list[int]] = [[] for _ in LABELS]
        for i in sorted(id2label):
            name = id2label[i]
            if label_map:
                target = label_map.get(name, label_map.get(str(i)))
                if target is None:
                    raise ModelError(f"classifier label {name!r} (id {i}) of {self.cfg.model!r} is not in "
                                     f"teacher.label_map (model labels: {names})")
            else:
                target = name.lower()
                if target not in LABEL2ID:
                    raise ModelError(f"classifier {self.cfg.model!r} has labels {names}; "
                                     f"set teacher.label_map to map them onto {', '.join(LABELS)}")
            columns[LABEL2ID[target]].append(i)
        empty = [LABELS[c] for c, cols in enumerate(columns) if not cols]
        if empty:
            raise ModelError(f"no label of classifier {self.cfg.model!r} maps to class {', '.join(empty)}")
        return columns

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        result = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        if not texts:
            return result
        model = self._require_model()
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True,
                                                       max_length=self.cfg.max_length)["input_ids"]]
        bar = tqdm(total=len(texts), desc=f"teacher {self.name}", disable=not progress, unit="text")
        with bar, torch.inference_mode():
            for idx in _sorted_batches(lengths, self.cfg.batch_size):
                batch = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.cfg.max_length,
                                       padding=True, return_tensors="pt").to(self.device)
                logits = model(**batch).logits.float()  # [B, num_labels]
                self.forward_passes += 1
                # A class owning several columns gets their log-sum-exp (its total probability, up to a constant).
                per_class = [torch.logsumexp(logits[:, cols], dim=-1) for cols in self.columns]  # 3 x [B]
                result[idx] = torch.stack(per_class, dim=-1).cpu().numpy()  # [B, 3]
                bar.update(len(idx))
        return result

    def fingerprint(self) -> dict:
        return {
            "version": FINGERPRINT_VERSION,
            "class": type(self).__name__,
            "model": self.cfg.model,
            "revision": self.cfg.revision,
            "content_digest": self._content_digest,
            "dtype": self._dtype,
            "label_map": {LABELS[c]: cols for c, cols in enumerate(self.columns)},
            "max_length": self.cfg.max_length,
        }


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


# --------------------------------------------------------------------------------------------- factory


def build_teacher(
    cfg: TeacherConfig,
    train_texts: Sequence[str] | None = None,
    train_labels: Sequence[int] | None = None,
    seed: int = 0,
) -> Teacher:
    """The teacher described by ``cfg``; few-shot examples (``cfg.few_shot > 0``) are drawn from train.

    ``cfg.finetune`` is not applied here (the teacher fine-tune stage saves a model that ``cfg.model`` names).
    """
    if cfg.kind == "prompted_lm":
        few_shot: list[tuple[str, int]] = []
        if cfg.few_shot > 0:
            if not train_texts or train_labels is None:
                raise DataError(f"teacher.few_shot is {cfg.few_shot} but no labelled training texts were given")
            few_shot = select_few_shot(train_texts, train_labels, cfg.few_shot, seed)
        return PromptedLMTeacher(cfg, few_shot=few_shot)
    elif cfg.kind == "classifier":
        return ClassifierTeacher(cfg)
    elif cfg.kind == "ensemble":
        members = [build_teacher(m, train_texts, train_labels, seed) for m in cfg.members]
        return EnsembleTeacher(members, name=cfg.name)
    raise ModelError(f"unknown teacher kind {cfg.kind!r}")
