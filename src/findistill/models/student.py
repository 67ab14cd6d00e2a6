"""The student: a sequence-classification model over the canonical classes, trained with LoRA or fully.

* ``build_student`` loads ``AutoTokenizer`` + ``AutoModelForSequenceClassification`` (a causal LM such as BLOOM or
  LLaMA gets a fresh ``score`` head; an encoder such as BERT/MiniLM a fresh ``classifier``), sets the canonical
  ``id2label`` / ``label2id`` and makes sure there is a pad token the model knows about (decoder-only classifiers
  pool the rightmost token that is not ``pad_token_id``), then wraps the model in peft LoRA adapters when
  ``method: lora``. With peft's ``SEQ_CLS`` task type the head (``classifier`` / ``score``) is added to
  ``modules_to_save`` by peft itself, so it trains fully and is saved with the adapters.
* ``save_student`` merges the adapters into a copy of the model and writes a plain Hugging Face folder (safetensors
  + tokenizer), atomically, that ``transformers.pipeline("text-classification", model=folder)`` loads with no
  findistill import.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from findistill.config import LABEL2ID, LABELS, StudentConfig
from findistill.errors import ModelError, first_line
from findistill.models.inference import ensure_pad_token
from findistill.io import atomic_directory
from findistill.models.refs import resolve_model

__all__ = ["build_student", "save_student", "count_parameters", "default_target_modules", "is_decoder_only",
           "truncated_layers"]

# Attention + MLP projections per architecture (config.model_type); anything else falls back to "all-linear".
_BERT_LIKE = ["query", "key", "value", "dense"]
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_TARGET_MODULES: dict[str, list[str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "mpnet": ["q", "k", "v", "o"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
}


def is_decoder_only(model: PreTrainedModel) -> bool:
    """True for causal-LM architectures (BLOOM, LLaMA, Qwen …) that have no masked-LM form (BERT, RoBERTa …)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def default_target_modules(model: PreTrainedModel) -> list[str] | str:
    """LoRA target modules for ``model``'s architecture, or peft's ``"all-linear"`` for unknown ones."""
    return list(_TARGET_MODULES.get(getattr(model.config, "model_type", ""), [])) or "all-linear"


def _set_canonical_config(config: Any, tokenizer: PreTrainedTokenizerBase) -> None:
    """Canonical labels and the tokenizer's pad id on a model config (in place)."""
    config.id2label = {i: name for i, name in enumerate(LABELS)}
    config.label2id = dict(LABEL2ID)
    config.num_labels = len(LABELS)
    config.pad_token_id = tokenizer.pad_token_id


def truncated_layers(config: Any, num_layers: int) -> dict[str, Any]:
    """Config overrides that keep the first ``num_layers`` transformer layers of a pretrained model.

    ``from_pretrained(path, num_hidden_layers=N)`` builds an N-layer model and loads layers 0..N-1 (plus the
    embeddings) from the checkpoint; the deeper layers' weights are left unused. The *first* layers are kept, not
    evenly spaced ones, because each kept layer then receives exactly the input it was trained on (layer k reads
    layer k-1's output); with spaced layers every layer after the first would read a representation it never saw.
    Configs that list per-layer types (``layer_types``) are cut to the same length.
    """
    total = getattr(config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise ModelError(f"student.num_layers: {type(config).__name__} has no num_hidden_layers to cut")
    if not 1 <= num_layers <= total:
        raise ModelError(f"student.num_layers: must be in 1..{total} for this model, got {num_layers}")
    overrides: dict[str, Any] = {"num_hidden_layers": num_layers}
    if isinstance(getattr(config, "layer_types", None), list):
        overrides["layer_types"] = config.layer_types[:num_layers]
    return overrides


def build_student(cfg: StudentConfig, num_labels: int = 3) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the student model (a peft ``PeftModel`` for ``method: lora``) and its tokenizer, ready to train.

    Weights load in float32 (mixed precision is the Trainer's job). Raises ``ModelError`` when the model
    cannot be resolved or loaded.
    """
    if num_labels != len(LABELS):
        raise ValueError(f"the student predicts the canonical {len(LABELS)} classes, got num_labels={num_labels}")
    path = resolve_model(cfg.model, cfg.revision)
    kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        if cfg.num_layers is not None:
            kwargs.update(truncated_layers(AutoConfig.from_pretrained(path, **kwargs), cfg.num_layers))
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=num_labels,
            id2label={i: name for i, name in enumerate(LABELS)},
            label2id=dict(LABEL2ID),
            dtype=torch.float32,
            **kwargs,
        )
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load student model {cfg.model!r}: {first_line(err)}") from err

    ensure_pad_token(tokenizer, owner=f"student {cfg.model!r}")
    _set_canonical_config(model.config, tokenizer)
    if is_decoder_only(model):
        # The head pools the rightmost non-pad token, so either side works; right padding keeps position ids of
        # the real tokens at 0..n-1 (models that derive positions from the index, not from the attention mask).
        tokenizer.padding_side = "right"
        model.config.use_cache = False  # no KV cache while training a classifier

    if cfg.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model, tokenizer

    from peft import LoraConfig, TaskType, get_peft_model

    lora_cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # peft adds "classifier" / "score" to modules_to_save: the head trains + saves
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules) if cfg.lora.target_modules else default_target_modules(model),
    )
    try:
        peft_model = get_peft_model(model, lora_cfg)
    except ValueError as err:  # e.g. target modules not found in the model
        raise ModelError(f"student.lora.target_modules: {first_line(err)}") from err
    return peft_model, tokenizer


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts of the module as it is (adapters and head copies included)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _merged(model: torch.nn.Module) -> PreTrainedModel:
    """A plain transformers model: LoRA merged into a deep copy (the caller's model stays usable)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return model  # type: ignore[return-value]
    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model  # type: ignore[return-value]


def save_student(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Merge LoRA adapters and write a plain Hugging Face folder (safetensors + tokenizer) atomically.

    The folder's config has the canonical ``id2label`` / ``label2id`` and the tokenizer's ``pad_token_id``, so
    ``transformers.pipeline("text-classification", model=out_dir)`` returns negative / neutral / positive.
    """
    out_dir = Path(out_dir)
    merged = _merged(model)
    ensure_pad_token(tokenizer, owner="student")
    _set_canonical_config(merged.config, tokenizer)
    with atomic_directory(out_dir) as tmp:
        merged.save_pretrained(tmp)  # safetensors is the only format transformers 5 writes
        tokenizer.save_pretrained(tmp)
    return out_dir
