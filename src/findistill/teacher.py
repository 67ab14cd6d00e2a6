"""Teachers: texts -> ``[N, 3]`` float32 class logits in the canonical order ``config.LABELS``.

* :class:`PromptedLMTeacher` — a causal LM read through label words (no generation): the task (prompt, few-shot
  examples, chat template, verbalizer) gives token-id prompts; a backend (``teacher.backend``, see ``BACKENDS``)
  returns the next-token log-probabilities of the label-word tokens; per class, the log-sum-exp over its tokens.
  :class:`HFBackend` runs eager ``transformers`` forward passes (the reference), :class:`VLLMBackend` a vLLM engine.
* :class:`ClassifierTeacher` — any ``AutoModelForSequenceClassification``, its columns mapped onto the classes.
* :class:`EnsembleTeacher` — the mean of its members' probabilities (returned as log-probabilities).

``fingerprint()`` is a JSON-able identity of everything that changes the logits; :mod:`findistill.cache` keys on it.
"""

from __future__ import annotations

import abc
import gc
import hashlib
import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import LABEL2ID, LABELS, TeacherConfig
from findistill.errors import DataError, ModelError, first_line
from findistill.inference import ensure_pad_token, predict_texts, run_batches
from findistill.model_refs import resolve_model
from findistill.prompts import build_prompt, select_few_shot, uses_chat_template, verbalizer_token_ids
from findistill.student import count_parameters

FINGERPRINT_VERSION = 1
log = logging.getLogger("findistill.teacher")


# --------------------------------------------------------------------------------------------- helpers


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
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


def _checked_tokenizer(cfg: TeacherConfig, resolved: str, tokenizer: Any) -> tuple[str | None, Any]:
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


def _load(
    cfg: TeacherConfig, auto_class: Any, model: Any, tokenizer: Any, device: str | torch.device | None
) -> tuple[Any, Any, torch.device, str | None]:
    """(model in eval mode on its device, tokenizer with a pad token, device, content digest of a local folder).

    A ``model`` / ``tokenizer`` given by the caller is used as is (moved to ``device`` when one is given). A model
    placed as it loaded (``teacher.device_map``, quantization) stays where it is; its inputs go to the device of
    its input embeddings, and accelerate's hooks carry the activations from device to device.
    """
    resolved = cfg.model if model is not None and tokenizer is not None else resolve_model(cfg.model, cfg.revision)
    revision, tokenizer = _checked_tokenizer(cfg, resolved, tokenizer)
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


# --------------------------------------------------------------------------------------------- LM backends


def _load_tokenizer(cfg: TeacherConfig, tokenizer: Any = None) -> tuple[str, Any]:
    """(resolved model reference, tokenizer with a pad token): the tokenizer every backend builds prompts with."""
    resolved = resolve_model(cfg.model, cfg.revision)
    _, tokenizer = _checked_tokenizer(cfg, resolved, tokenizer)
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


class HFBackend(LMBackend):
    """Eager ``transformers`` forward passes: one per batch of similar-length, left-padded prompts (the reference)."""

    name = "hf"

    def __init__(self, cfg: TeacherConfig, model: torch.nn.Module | None = None, tokenizer: Any = None,
                 device: str | torch.device | None = None):
        from transformers import AutoModelForCausalLM

        self.cfg = cfg
        self.model, self.tokenizer, self.device, self.content_digest = _load(
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


def _vllm_dtype(cfg: TeacherConfig) -> str:
    """``teacher.vllm.dtype``, with auto = the rule of ``teacher.dtype`` (bf16 on CUDA with bf16 support, else fp32)."""
    name = cfg.vllm.dtype if cfg.vllm.dtype != "auto" else cfg.dtype
    if name == "auto":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return name


def _meta_parameter_count(resolved: str, revision: str | None) -> int:
    """Parameters of a causal LM counted without loading its weights (a meta-device copy)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolved, revision=revision)
        with torch.device("meta"):
            return count_parameters(AutoModelForCausalLM.from_config(config))[0]
    except Exception:  # a count is a table entry, never a reason to fail a run
        return 0


VLLM_MAX_LOGPROB_TOKEN_IDS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS in vLLM 0.32


class VLLMBackend(LMBackend):
    """A vLLM engine (``vllm.LLM``), imported only here. Prompts go in as token ids, so both backends see the same
    tokens; class logits come from one decoding step that returns exactly the label tokens' log-probabilities
    (``SamplingParams(max_tokens=1, logprob_token_ids=[...])``, not a top-k that a label token could fall out of).
    """

    name = "vllm"

    def __init__(self, cfg: TeacherConfig, model: Any = None, tokenizer: Any = None,
                 device: str | torch.device | None = None):
        if model is not None:
            raise ModelError("teacher.backend vllm loads its own weights; an in-memory model runs on backend hf")
        try:
            import vllm
        except ImportError as err:
            raise ModelError(f"teacher.backend: vllm needs the vllm package ({first_line(err)}); install it as in "
                             "README.md, section vLLM, or use backend: hf") from None
        self.cfg = cfg
        resolved, self.tokenizer = _load_tokenizer(cfg, tokenizer)
        revision = None if Path(resolved).is_dir() else cfg.revision
        settings = cfg.vllm
        self.dtype = _vllm_dtype(cfg)
        memory = settings.gpu_memory_utilization or (0.9 if torch.cuda.is_available() else 0.3)
        kwargs: dict[str, Any] = {
            "model": resolved, "tokenizer": resolved, "revision": revision, "dtype": self.dtype,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "data_parallel_size": settings.data_parallel_size,
            "gpu_memory_utilization": memory,
            "enable_prefix_caching": settings.enable_prefix_caching,
            "enforce_eager": settings.enforce_eager,
            "seed": 0,
        }
        if settings.max_model_len is not None:
            kwargs["max_model_len"] = settings.max_model_len
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as err:
            raise ModelError(f"vLLM cannot start teacher {cfg.model!r}: {first_line(err)}") from None
        self.model = self.llm
        self.version = str(getattr(vllm, "__version__", "unknown"))
        self.content_digest = _folder_digest(resolved)
        self.num_parameters = _meta_parameter_count(resolved, revision)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)  # the engine's resolved limit

    def _engine(self) -> Any:
        if self.llm is None:
            raise ModelError(f"teacher {self.cfg.display_name} was released; build it again to compute logits")
        return self.llm

    def _check_lengths(self, prompts: Sequence[list[int]], new_tokens: int) -> None:
        longest = max((len(p) for p in prompts), default=0)
        if longest + new_tokens > self.max_model_len:
            raise ModelError(f"a prompt of {longest} tokens + {new_tokens} new ones exceeds teacher.vllm.max_model_len "
                             f"({self.max_model_len}); raise it or lower teacher.max_length")

    def token_logprobs(self, prompts: Sequence[list[int]], token_ids: Sequence[int], batch_size: int,
                       progress: bool = True, desc: str = "teacher") -> np.ndarray:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        token_ids = [int(t) for t in token_ids]
        result = np.zeros((len(prompts), len(token_ids)), dtype=np.float32)
        if not prompts:
            return result
        if len(token_ids) > VLLM_MAX_LOGPROB_TOKEN_IDS:
            raise ModelError(f"the verbalizer has {len(token_ids)} label tokens; vLLM returns at most "
                             f"{VLLM_MAX_LOGPROB_TOKEN_IDS} per request (use fewer label words or backend: hf)")
        self._check_lengths(prompts, 1)
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=token_ids, detokenize=False)
        # vLLM schedules its own batches (batch_size is the HF backend's knob); outputs come back in input order.
        outputs = self._engine().generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                          use_tqdm=progress)
        for row, out in enumerate(outputs):
            step = out.outputs[0].logprobs[0]  # {token id: Logprob} of the one generated position
            missing = [t for t in token_ids if t not in step]
            if missing:
                raise ModelError(f"vLLM returned no log-probability for label token ids {missing} "
                                 f"(got {sorted(step)}); the class logits would be wrong")
            result[row] = [step[t].logprob for t in token_ids]
        return result

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, temperature: float, top_p: float,
                 seeds: Sequence[int], progress: bool = False) -> list[str]:
        """One completion per prompt (special tokens skipped), each with its own seed: a result does not depend on
        which other prompts share its batch. ``temperature`` 0 decodes greedily."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        self._check_lengths(prompts, max_new_tokens)
        sampling = {"temperature": temperature, "top_p": top_p} if temperature > 0 else {"temperature": 0.0}
        params = [SamplingParams(max_tokens=max_new_tokens, seed=int(seed), skip_special_tokens=True, **sampling)
                  for seed in seeds]
        outputs = self._engine().generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                          use_tqdm=progress)
        return [out.outputs[0].text for out in outputs]

    def identity(self) -> dict:
        return {"backend": {"name": self.name, "vllm_version": self.version}}

    def release(self) -> None:
        llm, self.llm, self.model = getattr(self, "llm", None), None, None
        if llm is None:
            return
        # vLLM 0.32: LLM.llm_engine.engine_core is the client of the engine-core process; shutting it down ends
        # that process and its workers (and frees the memory they reserved) now rather than at interpreter exit.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None) or getattr(llm, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as err:  # pragma: no cover - best effort: the engine's processes end with ours anyway
                log.debug("vLLM shutdown: %s", first_line(err))
        del llm
        gc.collect()


# The backends a prompted teacher can run on (``teacher.backend``). A new engine is one class + one entry here
# (and its name in config.TeacherConfig.backend's Literal).
BACKENDS: dict[str, type[LMBackend]] = {"hf": HFBackend, "vllm": VLLMBackend}


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

    def _last_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backend.last_logits(batch)  # type: ignore[attr-defined]

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
        self.num_parameters = count_parameters(self.model)[0]
        self._dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
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
