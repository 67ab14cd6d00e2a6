"""The vLLM backend of a prompted LM teacher."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import TeacherConfig
from findistill.errors import ModelError, first_line
from findistill.models.student import count_parameters

from findistill.teachers.backends.base import LMBackend, load_tokenizer
from findistill.teachers.base import folder_digest

log = logging.getLogger(__name__)

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
        resolved, self.tokenizer = load_tokenizer(cfg, tokenizer)
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
        self.content_digest = folder_digest(resolved)
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
