"""Typed run configuration: one YAML file per run, parsed into dataclasses.

Every field has a default and a help text (``field(metadata={"help": ...})``); ranges are checked in
``__post_init__``. Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` whose
one-line message names the full key (``train.alpha: must be in [0, 1], got 1.5``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from findistill.errors import FindistillError, first_line

# Canonical classes. Every dataset is mapped onto these ids; every student's id2label is this.
LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

TFNS_HUB_ID = "zeroshot/twitter-financial-news-sentiment"
# TFNS: 0 Bearish, 1 Bullish, 2 Neutral.
TFNS_LABEL_MAP = {"0": "negative", "1": "positive", "2": "neutral"}

DEFAULT_PROMPT = (
    "Classify the sentiment of this financial news tweet as negative, neutral or positive.\n"
    "Tweet: {text}\nSentiment:"
)
# Chat models often answer capitalised ("Positive"): both spellings count for the class.
DEFAULT_VERBALIZER = {
    "negative": ["negative", "Negative"],
    "neutral": ["neutral", "Neutral"],
    "positive": ["positive", "Positive"],
}
PARAPHRASE_PROMPT = "Paraphrase this sentence without changing sentiment: {text}"


class ConfigError(FindistillError, ValueError):
    """A bad config value; ``str(err)`` is one line naming the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


def _check_label_map(label_map: dict) -> None:
    """Every value of a ``label_map`` (file label or model label -> class) is a canonical class."""
    for value, target in label_map.items():
        _check(target in LABEL2ID, f"label_map.{value}", f"must be one of {', '.join(LABELS)}, got {target!r}")


@dataclass
class TransferSource:
    path: str = _help("A file (one text per line .txt, CSV, JSONL, parquet), a folder of CSVs, or a hub dataset id "
                      "(owner/name), resolved as a data.transfer_files string is.", "")
    name: str | None = _help("The source's name in reports and the model card (default: path).", None)
    max_examples: int | None = _help(
        "Seeded random subset of this source's texts after filtering and after its held-out slice (null: all).", None)
    holdout: int | None = _help(
        "Texts of this source held out (seeded) for fidelity: labelled by the teacher, never trained on, scored "
        "per model in the report (null: data.transfer_holdout).", None)

    def __post_init__(self):
        _check(bool(self.path), "path", "must name a file, folder or hub dataset id")
        _check(self.max_examples is None or self.max_examples >= 1, "max_examples", f"must be >= 1 or null, got {self.max_examples}")
        _check(self.holdout is None or self.holdout >= 0, "holdout", f"must be >= 0 or null, got {self.holdout}")

    @property
    def label(self) -> str:
        return self.name or self.path


@dataclass
class DataConfig:
    source: str = _help(
        "TFNS hub id, a folder holding sent_train.csv/sent_valid.csv, or the hub id of another dataset. "
        "When it is the TFNS hub id and FINDISTILL_DATA_DIR (or --data-dir) is set, that folder is read instead.",
        TFNS_HUB_ID,
    )
    train_file: str | None = _help("Explicit training file (CSV, JSONL or parquet); overrides `source`.", None)
    eval_file: str | None = _help("Explicit evaluation file (CSV, JSONL or parquet); overrides `source`.", None)
    text_column: str = _help("Column holding the text.", "text")
    label_column: str = _help("Column holding the gold label.", "label")
    label_map: dict[str, str] = _help(
        "Dataset label value (as a string) -> canonical class (negative/neutral/positive).",
        factory=lambda: dict(TFNS_LABEL_MAP),
    )
    dev_fraction: float = _help("Fraction of train carved out (stratified, seeded) as the dev split.", 0.1)
    max_train_examples: int | None = _help("Stratified subsample of the training split (after the dev split).", None)
    max_dev_examples: int | None = _help("Stratified subsample of the dev split.", None)
    max_eval_examples: int | None = _help("Stratified subsample of the evaluation split (None = all rows).", None)
    transfer_files: list[str | TransferSource] = _help(
        "Each entry a path string, or a named source {path, name, max_examples, holdout}. "
        "Unlabelled texts (one per line .txt, CSV or JSONL with the text column; any label column is ignored) "
        "labelled by the teacher only; they get the KD loss only. Whitespace-normalised and de-duplicated; texts "
        "that also occur in the dev or evaluation split (case, whitespace and URLs normalised) are dropped and "
        "counted. A relative path is read from the working directory, else from the parent of the TFNS data folder; "
        "a hub dataset id (owner/name) from a local copy there (<name>/*.csv), else from the hub (every split).",
        factory=list,
    )
    max_transfer_examples: int | None = _help(
        "Seeded random subset of all transfer texts (after filtering, held-out slices and per-source caps).", None)
    transfer_holdout: int = _help(
        "Texts of every transfer source held out (seeded) for fidelity: the teacher labels them, no student trains on "
        "them, and the report gives per source and model the agreement with the teacher, the mean KL from teacher "
        "to student and the teacher's label distribution (0: none).", 0)
    seed: int = _help("Seed of the dev split and of subsampling.", 42)

    def __post_init__(self):
        _check(0.0 < self.dev_fraction < 0.5, "dev_fraction", f"must be in (0, 0.5), got {self.dev_fraction}")
        for name in ("max_train_examples", "max_dev_examples", "max_eval_examples", "max_transfer_examples"):
            value = getattr(self, name)
            _check(value is None or value >= 3, name, f"must be >= 3 or null, got {value}")
        _check(self.transfer_holdout >= 0, "transfer_holdout", f"must be >= 0, got {self.transfer_holdout}")
        _check_label_map(self.label_map)
        names = [e.label if isinstance(e, TransferSource) else e for e in self.transfer_files]
        _check(len(set(names)) == len(names), "transfer_files", f"source names must be unique, got {names}")

    def transfer_entries(self) -> list[TransferSource]:
        """Every ``transfer_files`` entry as a :class:`TransferSource` (a string is a source named by its path)."""
        return [e if isinstance(e, TransferSource) else TransferSource(path=e) for e in self.transfer_files]


@dataclass
class LoraSettings:
    r: int = _help("LoRA rank.", 16)
    alpha: int = _help("LoRA alpha (scaling = alpha / r).", 32)
    dropout: float = _help("LoRA dropout.", 0.05)
    target_modules: list[str] | None = _help(
        "Module names to adapt; null picks the attention and MLP projections of the architecture.", None
    )

    def __post_init__(self):
        _check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        _check(self.alpha >= 1, "alpha", f"must be >= 1, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class SelfTrainingSettings:
    """One round of self-training of the fine-tuned teacher on its own confident labels of the transfer texts."""

    enabled: bool = _help(
        "After the fine-tune on gold labels (round 0), the round-0 teacher labels the transfer texts (the held-out "
        "slices excluded); a fresh copy of the base model is fine-tuned on gold + the texts it labelled with at least "
        "min_confidence (hard labels), and the dev split keeps whichever round has the better macro-F1.", False)
    min_confidence: float = _help("Lowest round-0 probability of a transfer text's class for it to be kept.", 0.9)
    max_texts: int | None = _help("At most this many confident texts (a seeded draw); null: all of them.", None)

    def __post_init__(self):
        _check(0 < self.min_confidence < 1, "min_confidence", f"must be in (0, 1), got {self.min_confidence}")
        _check(self.max_texts is None or self.max_texts >= 1, "max_texts", f"must be >= 1, got {self.max_texts}")


@dataclass
class TeacherFinetuneConfig:
    enabled: bool = _help("Fine-tune the teacher on gold labels (LoRA) before it labels anything.", False)
    method: Literal["verbalizer", "head"] = _help(
        "verbalizer: cross-entropy over the label-word logits at the answer position of the teacher prompt; "
        "head: a sequence-classification head on the causal LM.",
        "verbalizer",
    )
    parameters: Literal["lora", "full"] = _help(
        "lora: LoRA adapters (+ the head) train, merged when saved; full: every weight trains (method head only; "
        "the way to tune a small encoder classifier teacher such as all-mpnet-base-v2).", "lora")
    lora: LoraSettings = _help("LoRA settings of the teacher fine-tune (parameters: lora).", factory=LoraSettings)
    epochs: float = _help("Training epochs.", 1.0)
    learning_rate: float = _help("Peak learning rate.", 2e-4)
    batch_size: int = _help("Per-device batch size.", 8)
    max_train_examples: int | None = _help("Stratified subsample of train used for the fine-tune.", None)
    seed: int | None = _help(
        "Seed of the fine-tune (head initialisation, batch order, dropout); null: data.seed. Another seed gives "
        "another teacher of the same recipe, e.g. a member of an ensemble teacher.", None)
    self_training: SelfTrainingSettings = _help(
        "Self-training on the transfer texts, kept only where dev says it helps.", factory=SelfTrainingSettings)
    cross_fit_folds: int = _help(
        "0 = off. K >= 2: K more teachers, each fine-tuned on K-1 folds of the training split, label the fold they "
        "did not see (out-of-fold soft labels for the student's training rows); the teacher fine-tuned on all "
        "training texts labels the transfer, dev and evaluation texts.", 0)
    trainer_kwargs: dict[str, Any] = _help(
        "Other transformers.TrainingArguments fields for the teacher fine-tune, checked as train.trainer_kwargs "
        "(e.g. {train_sampling_strategy: group_by_length}: batches of similar length, about half the padding of "
        "random batches of tweets).", factory=dict)

    def __post_init__(self):
        _check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        check_trainer_kwargs(self.trainer_kwargs)
        _check(self.cross_fit_folds == 0 or self.cross_fit_folds >= 2, "cross_fit_folds",
               f"must be 0 (off) or >= 2, got {self.cross_fit_folds}")
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.parameters == "lora" or self.method == "head", "parameters",
               "full fine-tuning needs method: head (the verbalizer method trains LoRA adapters only)")


@dataclass
class VLLMSettings:
    """Engine settings of ``teacher.backend: vllm`` (passed to ``vllm.LLM``)."""

    tensor_parallel_size: int = _help("GPUs one model copy is split over (tensor parallelism).", 1)
    data_parallel_size: int = _help("Model copies serving requests side by side (data parallelism).", 1)
    gpu_memory_utilization: float | None = _help(
        "Share of GPU memory vLLM reserves (weights + KV cache); on a CPU build, the share of RAM. "
        "null = 0.9 with a CUDA GPU, 0.3 without one.", None)
    max_model_len: int | None = _help("Longest sequence (prompt + generated tokens); null = the model's own.", None)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "Weights dtype in vLLM; auto = teacher.dtype's rule (bfloat16 on CUDA with bf16 support, else float32).",
        "auto")
    enable_prefix_caching: bool = _help(
        "Reuse the KV cache of a shared prompt prefix (instruction, few-shot examples, chat header).", True)
    enforce_eager: bool = _help(
        "Skip vLLM's torch.compile warm-up (and CUDA graphs): the engine starts in seconds rather than minutes on a "
        "CPU, and decodes more slowly.", False)

    def __post_init__(self):
        _check(self.tensor_parallel_size >= 1, "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}")
        _check(self.data_parallel_size >= 1, "data_parallel_size", f"must be >= 1, got {self.data_parallel_size}")
        gmu = self.gpu_memory_utilization
        _check(gmu is None or 0 < gmu <= 1, "gpu_memory_utilization", f"must be in (0, 1] or null, got {gmu}")
        _check(self.max_model_len is None or self.max_model_len >= 16, "max_model_len",
               f"must be >= 16 or null, got {self.max_model_len}")


@dataclass
class TeacherConfig:
    kind: Literal["prompted_lm", "classifier", "ensemble"] = _help(
        "prompted_lm: a causal LM read through label-word logits; classifier: an "
        "AutoModelForSequenceClassification; ensemble: the mean of `members`' probabilities.",
        "prompted_lm",
    )
    model: str = _help(
        "Hub id, local folder, or the name of a pip-shipped offline model (e.g. smollm2-135m-instruct).",
        "Orkhan/llama-2-7b-absa",
    )
    revision: str | None = _help("Hub revision (branch, tag or commit).", None)
    name: str | None = _help("Display name in tables; defaults to the model reference.", None)
    prompt: str = _help("Prompt template with a {text} placeholder; the answer is read at its end.", DEFAULT_PROMPT)
    system_prompt: str | None = _help("System message for tokenizers with a chat template.", None)
    use_chat_template: bool = _help("Wrap the prompt in the tokenizer's chat template when it has one.", True)
    few_shot: int = _help("Number of labelled training examples (balanced, seeded) shown before the text.", 0)
    verbalizer: dict[str, list[str]] = _help(
        "Class -> label words; a class's logit is the log-sum-exp of its words' first-token logits.",
        factory=lambda: {k: list(v) for k, v in DEFAULT_VERBALIZER.items()},
    )
    label_map: dict[str, str] = _help(
        "classifier teachers: the model's label name (or id as a string) -> canonical class. "
        "Empty: the model's id2label names must already be negative/neutral/positive.",
        factory=dict,
    )
    members: list[TeacherConfig] = _help("ensemble: the member teachers.", factory=list)
    batch_size: int = _help("Texts per forward pass.", 16)
    max_length: int = _help("Maximum prompt length in tokens (longer prompts are cut on the left of the text).", 256)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "Weights dtype; auto = bfloat16 on CUDA with bf16 support, else float32.", "auto"
    )
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = _help(
        "A teacher larger than one device: its layers are spread over every visible GPU (then CPU RAM) as it loads "
        "(accelerate's big-model loading; hf backend, one process). null: the whole teacher on one device.", None)
    quantization: Literal["none", "8bit", "4bit"] = _help(
        "Load the teacher's linear layers in 8 or 4 bits (bitsandbytes; hf backend; needs a CUDA GPU).", "none")
    finetune: TeacherFinetuneConfig = _help("Optional fine-tune of the teacher on gold labels.", factory=TeacherFinetuneConfig)
    backend: Literal["hf", "vllm"] = _help(
        "Engine of a prompted_lm teacher (and of augment's paraphrasing): hf = transformers forward passes (the "
        "reference); vllm = a vLLM engine (label-word log-probabilities in one step; needs the vllm package).", "hf")
    vllm: VLLMSettings = _help("vLLM engine settings (backend: vllm).", factory=VLLMSettings)
    min_class_recall: float = _help(
        "The health gate: before the teacher labels any training or transfer text it is scored on the dev split, and "
        "the run stops when its recall on some class is below this (0: no recall rule).", 0.2)
    health_gate: bool = _help(
        "Stop the run before labelling when the teacher fails its dev check (a class recall below "
        "min_class_recall, or accuracy below the majority class). false: the check is still recorded in "
        "results.json, and the run goes on.", True)

    def __post_init__(self):
        _check(0.0 <= self.min_class_recall <= 1.0, "min_class_recall",
               f"must be in [0, 1], got {self.min_class_recall}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_length >= 8, "max_length", f"must be >= 8, got {self.max_length}")
        _check(self.few_shot >= 0, "few_shot", f"must be >= 0, got {self.few_shot}")
        if self.kind == "prompted_lm":
            _check("{text}" in self.prompt, "prompt", "must contain the {text} placeholder")
            _check(set(self.verbalizer) == set(LABELS), "verbalizer", f"must have exactly the keys {', '.join(LABELS)}")
            for name, words in self.verbalizer.items():
                _check(len(words) > 0, f"verbalizer.{name}", "needs at least one label word")
        if self.kind == "ensemble":
            _check(len(self.members) >= 1, "members", "an ensemble needs at least one member")
        if self.backend == "vllm":
            _check(self.kind == "prompted_lm", "backend", f"vllm runs prompted_lm teachers only, not {self.kind}")
            _check(not (self.finetune.enabled and self.finetune.method == "head"), "backend",
                   "vllm cannot run finetune.method head (it saves a classifier); use method: verbalizer or backend: hf")
            _check(self.device_map is None and self.quantization == "none", "backend",
                   "device_map and quantization are hf settings; vllm spreads a teacher with "
                   "vllm.tensor_parallel_size")
        _check_label_map(self.label_map)

    @property
    def display_name(self) -> str:
        return self.name or self.model


@dataclass
class StudentConfig:
    model: str = _help("Hub id, local folder, or a pip-shipped offline model name.", "bigscience/bloom-1b1")
    revision: str | None = _help("Hub revision.", None)
    name: str | None = _help("Display name in tables.", None)
    method: Literal["lora", "full"] = _help("lora: peft adapters (+ the head); full: all weights train.", "lora")
    lora: LoraSettings = _help("LoRA settings (method: lora).", factory=LoraSettings)
    max_length: int = _help("Maximum input length in tokens.", 64)
    num_layers: int | None = _help(
        "Keep only the first N transformer layers of the pretrained model (initialised from its weights; the saved "
        "config says num_hidden_layers: N). null = all layers.", None)

    def __post_init__(self):
        _check(self.max_length >= 8, "max_length", f"must be >= 8, got {self.max_length}")
        _check(self.num_layers is None or self.num_layers >= 1, "num_layers", f"must be >= 1 or null, got {self.num_layers}")

    @property
    def display_name(self) -> str:
        return self.name or self.model


# TrainingArguments fields findistill sets itself (field -> what it is set from); train.trainer_kwargs refuses them.
TRAINER_OWNED_ARGUMENTS: dict[str, str] = {
    "output_dir": "the stage's scratch folder",
    "num_train_epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate",
    "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "weight_decay": "train.weight_decay",
    "warmup_steps": "train.warmup_ratio",
    "lr_scheduler_type": "train.lr_scheduler",
    "logging_strategy": "train.logging_steps",
    "logging_steps": "train.logging_steps",
    "seed": "train.seed",
    "label_smoothing_factor": "train.label_smoothing",  # the Trainer's own would be ignored: compute_loss is ours
    "bf16": "train.precision",
    "fp16": "train.precision",
    "eval_strategy": "train.selection",
    "eval_steps": "train.selection_steps",
    "load_best_model_at_end": "train.selection",
    "metric_for_best_model": "train.selection_metric",
    "greater_is_better": "train.selection_metric",
    "save_strategy": "train.selection and train.save_steps",
    "save_steps": "train.selection_steps and train.save_steps",
    "save_only_model": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "resume_from_checkpoint": "train.save_steps (a rerun resumes by itself)",
    "remove_unused_columns": "the distillation batches (labels and teacher_logits must reach compute_loss)",
    "label_names": "the distillation batches (labels and teacher_logits must reach compute_loss)",
}


@dataclass
class TrainConfig:
    epochs: float = _help("Training epochs of each student.", 2.0)
    learning_rate: float = _help("Peak learning rate.", 5e-5)
    batch_size: int = _help("Per-device training batch size.", 16)
    gradient_accumulation_steps: int = _help("Gradient accumulation steps.", 1)
    weight_decay: float = _help("AdamW weight decay.", 0.01)
    warmup_ratio: float = _help("Fraction of steps for linear warm-up.", 0.06)
    lr_scheduler: Literal["linear", "cosine", "constant"] = _help("Learning-rate schedule.", "linear")
    temperature: float = _help("Distillation temperature T (softens both distributions).", 2.0)
    alpha: float = _help("Weight of the KD term: alpha * T^2 * KL + (1 - alpha) * CE.", 0.5)
    label_smoothing: float = _help(
        "Label smoothing of the CE term (gold rows, CE-only and distilled students alike): the gold class gets "
        "1 - eps + eps/3, the others eps/3. 0 = none.", 0.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _help(
        "auto = bf16 on a CUDA device that supports it, else fp32.", "auto"
    )
    max_steps: int = _help("Stop after this many optimizer steps (-1: run all epochs).", -1)
    logging_steps: int = _help("Log the loss parts every N steps.", 20)
    eval_batch_size: int = _help("Batch size for evaluation passes.", 64)
    selection: Literal["none", "epoch", "steps"] = _help(
        "Checkpoint selection on the dev split (the same rule for the CE-only and the distilled student): score dev "
        "accuracy / macro-F1 after every epoch (epoch) or every `selection_steps` steps (steps) and keep the "
        "checkpoint with the best `selection_metric`; none keeps the last step.", "epoch")
    selection_steps: int = _help("Steps between dev evaluations when selection is steps.", 200)
    selection_metric: Literal["accuracy", "macro_f1"] = _help("Dev metric that picks the checkpoint.", "macro_f1")
    seed: int = _help("Training seed (the student's new head, data order, dropout).", 42)
    save_steps: int | None = _help(
        "Write a resumable checkpoint (weights, optimizer, scheduler, RNG and Trainer state) every N optimizer steps "
        "in the stage's scratch folder; the same command after a crash or kill -9 resumes from the newest complete "
        "one (Trainer.train(resume_from_checkpoint=...)) and ends with the same results. The dev-selection "
        "checkpoints are then resumable too. null = no resume: a killed stage trains again from step 0.", None)
    save_total_limit: int = _help(
        "Checkpoints kept in the scratch folder while training (the newest and the dev-best are always kept); "
        "the folder is deleted when training ends.", 1)
    trainer_kwargs: dict[str, Any] = _help(
        "Any other transformers.TrainingArguments field (e.g. {report_to: tensorboard, torch_compile: true}). "
        "Fields findistill sets from a train.* key or needs for its dev selection and checkpoints are refused (see "
        "TRAINER_OWNED_ARGUMENTS); the plain defaults report_to: none, dataloader_num_workers: 0 and use_cpu "
        "(true without CUDA) are overridden.", factory=dict)

    def __post_init__(self):
        _check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        _check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        _check(self.max_steps == -1 or self.max_steps >= 1, "max_steps", f"must be -1 or >= 1, got {self.max_steps}")
        _check(self.logging_steps >= 1, "logging_steps", f"must be >= 1, got {self.logging_steps}")
        _check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        _check(self.selection_steps >= 1, "selection_steps", f"must be >= 1, got {self.selection_steps}")
        _check(self.save_steps is None or self.save_steps >= 1, "save_steps", f"must be >= 1 or null, got {self.save_steps}")
        _check(self.save_total_limit >= 1, "save_total_limit", f"must be >= 1, got {self.save_total_limit}")
        check_trainer_kwargs(self.trainer_kwargs)


# Keys added to the config after stage keys (and checkpoint-resume keys) were introduced, with the value that means
# "as before": while a config holds that value, the key is left out of every key that hashes its section, so run
# folders, caches and checkpoints written before the key existed stay valid (tests/test_old_run.py).
ADDED_KEYS: dict[str, Any] = {"data.transfer_holdout": 0, "teacher.finetune.seed": None, "train.label_smoothing": 0.0,
                              "teacher.finetune.self_training": dataclasses.asdict(SelfTrainingSettings())}


def drop_added_defaults(section: dict, prefix: str = "") -> dict:
    """``section`` (the config below ``prefix`` as a dict, e.g. ``prefix="train."`` for ``asdict(config.train)``)
    without the :data:`ADDED_KEYS` at their "as before" value; changed in place and returned."""
    for dotted, unchanged in ADDED_KEYS.items():
        if not dotted.startswith(prefix):
            continue
        *parents, last = dotted[len(prefix):].split(".")
        node: Any = section
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] == unchanged:
            del node[last]
    return section


def check_trainer_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse (naming the key) a ``trainer_kwargs`` entry that is no ``TrainingArguments`` field or one findistill sets."""
    if not kwargs:
        return
    from transformers import TrainingArguments  # only when the key is used: config stays light to import

    known = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in kwargs:
        _check(key in known, f"trainer_kwargs.{key}", "unknown key: not a transformers.TrainingArguments field")
        owner = TRAINER_OWNED_ARGUMENTS.get(key)
        _check(owner is None, f"trainer_kwargs.{key}", f"set by findistill from {owner} (students; the teacher "
               "fine-tune's from teacher.finetune); set that instead")


@dataclass
class AugmentConfig:
    enabled: bool = _help("Generate teacher paraphrases of the training texts.", False)
    model: str | None = _help("Causal LM that paraphrases; null = the teacher's model.", None)
    prompt: str = _help("Paraphrase instruction with a {text} placeholder.", PARAPHRASE_PROMPT)
    use_chat_template: bool = _help("Use the tokenizer's chat template when it has one.", True)
    num_paraphrases: int = _help("Paraphrases generated per training text (k).", 1)
    max_source_examples: int | None = _help("Paraphrase only this many training texts (seeded subsample).", None)
    temperature: float = _help("Sampling temperature (0 = greedy).", 0.7)
    top_p: float = _help("Nucleus sampling p.", 0.9)
    max_new_tokens: int = _help("Maximum tokens generated per paraphrase.", 64)
    batch_size: int = _help("Prompts per generate() call.", 8)
    seed: int = _help("Sampling seed.", 1234)
    filter: bool = _help("Apply the filters below (false keeps every non-empty candidate).", True)
    drop_near_copies: bool = _help("Drop candidates (nearly) identical to their source.", True)
    near_copy_threshold: float = _help("Similarity (difflib ratio of normalised texts) at or above which = copy.", 0.9)
    drop_split_leaks: bool = _help("Drop candidates equal (normalised) to any text of any split.", True)
    drop_bad_length: bool = _help("Drop candidates whose length ratio to the source is outside the bounds.", True)
    min_length_ratio: float = _help("Minimum candidate/source character-length ratio.", 0.4)
    max_length_ratio: float = _help("Maximum candidate/source character-length ratio.", 2.5)
    drop_boilerplate: bool = _help("Drop candidates leaking prompt or chat boilerplate ('Sure! Here is...').", True)
    drop_inconsistent: bool = _help("Drop candidates whose teacher label disagrees with the source's gold label.", True)

    def __post_init__(self):
        _check("{text}" in self.prompt, "prompt", "must contain the {text} placeholder")
        _check(self.num_paraphrases >= 1, "num_paraphrases", f"must be >= 1, got {self.num_paraphrases}")
        _check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0 < self.near_copy_threshold <= 1, "near_copy_threshold", "must be in (0, 1]")
        _check(0 < self.min_length_ratio < self.max_length_ratio, "min_length_ratio", "must be > 0 and < max_length_ratio")


@dataclass
class EvalConfig:
    bootstrap_samples: int = _help("Bootstrap resamples for confidence intervals.", 1000)
    confidence: float = _help("Confidence level of the intervals.", 0.95)
    seed: int = _help("Bootstrap seed.", 0)

    def __post_init__(self):
        _check(self.bootstrap_samples >= 100, "bootstrap_samples", f"must be >= 100, got {self.bootstrap_samples}")
        _check(0.5 < self.confidence < 1, "confidence", f"must be in (0.5, 1), got {self.confidence}")


@dataclass
class CacheConfig:
    dir: str | None = _help(
        "Folder of the content-keyed teacher logits (chunks keyed by teacher and texts) and paraphrase files (keyed "
        "by generator, settings and texts); null = <run>/cache and <run>/augment. Runs that label the same texts "
        "with the same teacher (benchmark variants, sweeps over the student or train.alpha) can share one folder "
        "and label once; a relative path is relative to the working directory.", None)
    chunk_size: int = _help(
        "Texts per teacher-logit cache chunk: a crash loses at most one chunk, the teacher sees one chunk at a time, "
        "and `findistill label --shard i/N` splits the work by chunk. Changing it re-labels (chunks are keyed by "
        "their texts).", 4096)

    def __post_init__(self):
        _check(self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")


@dataclass
class CandidatesConfig:
    teachers: list[TeacherConfig] = _help(
        "Teacher candidates compared on the dev split (accuracy, macro-F1, params, peak memory, examples/s).",
        factory=list,
    )
    students: list[StudentConfig] = _help(
        "Student candidates: baseline (untrained head) and CE-only fine-tuning at the `train` budget.", factory=list
    )
    max_dev_examples: int | None = _help("Stratified subsample of the dev split used for the comparison.", None)
    max_train_examples: int | None = _help("Stratified subsample of train for the students' CE fine-tune.", None)


@dataclass
class RunConfig:
    name: str = _help("Run name shown in the report.", "findistill")
    data: DataConfig = _help("Dataset and splits.", factory=DataConfig)
    teacher: TeacherConfig = _help("The teacher whose judgement is distilled.", factory=TeacherConfig)
    student: StudentConfig = _help("The student that learns it.", factory=StudentConfig)
    train: TrainConfig = _help("Student training (shared by the CE-only and the distilled student).", factory=TrainConfig)
    augment: AugmentConfig = _help("Teacher paraphrase augmentation.", factory=AugmentConfig)
    eval: EvalConfig = _help("Evaluation statistics.", factory=EvalConfig)
    candidates: CandidatesConfig = _help("Candidates for `findistill candidates`.", factory=CandidatesConfig)
    cache: CacheConfig = _help("The teacher-logit cache.", factory=CacheConfig)
    evaluate_teacher: bool = _help("Evaluate the teacher on the evaluation split (a table row).", True)
    train_ce_student: bool = _help("Also train a CE-only student at the same budget (the KD comparison).", True)


# --------------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursing into lists, dicts, dataclasses)."""
    if tp is Any:  # passed through as YAML read it (train.trainer_kwargs: TrainingArguments checks its own values)
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, "must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append((arg, err))
        # a mapping is meant for the dataclass of the union: its error says what is wrong with it
        chosen = [e for a, e in errors if isinstance(value, dict) and dataclasses.is_dataclass(a)]
        raise (chosen or [errors[0][1]])[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if value is None:
        raise ConfigError(key, "must not be null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 5e-5 (no dot) as a string; accept numeric strings for floats only.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in names:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(path, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(prefix) if prefix else err


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config. ``overrides`` maps dotted keys to values (``{"train.epochs": 1}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path}: invalid YAML ({first_line(err)})") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return from_dict(RunConfig, data)


def dump_config(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True, width=120)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config (atomically) next to an output."""
    from findistill.io import atomic_write_text

    atomic_write_text(Path(path), dump_config(config))


# --------------------------------------------------------------------------------------------- the keys, for people


@dataclass(frozen=True)
class KeyInfo:
    """One config key as `findistill config` and docs/config.md show it."""

    key: str  # dotted, e.g. train.alpha
    type: str
    default: Any
    range: str  # the rule its section's __post_init__ checks ("" when none), or the choices of a Literal
    help: str


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "str"
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    return text.replace("typing.", "").replace("NoneType", "None")


def _checked_ranges(cls: type) -> dict[str, str]:
    """field -> the message of its ``_check`` in ``cls.__post_init__`` without the value ("must be in [0, 1]"): the
    ranges shown to people are read from the checks themselves, so they cannot drift apart."""
    import ast
    import inspect
    import textwrap

    post = getattr(cls, "__post_init__", None)
    if post is None:
        return {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(post)))
    loops: dict[str, list[str]] = {}  # `for name in ("a", "b"):` -> the keys a loop variable takes
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple):
            loops[node.target.id] = [e.value for e in node.iter.elts if isinstance(e, ast.Constant)]
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_check" and len(node.args) == 3):
            continue
        key_node, msg_node = node.args[1], node.args[2]
        if isinstance(key_node, ast.Constant):
            keys = [key_node.value]
        elif isinstance(key_node, ast.Name) and key_node.id in loops:
            keys = loops[key_node.id]
        else:
            continue
        if isinstance(msg_node, ast.Constant):
            message = str(msg_node.value)
        elif isinstance(msg_node, ast.JoinedStr):
            message = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in msg_node.values)
        else:
            continue
        message = message.split(", got")[0].replace("{}", "…").strip()
        for key in keys:
            if key in {f.name for f in dataclasses.fields(cls)} and key not in out:
                out[key] = message
    return out


def describe_keys(cls: type = RunConfig, prefix: str = "") -> list[KeyInfo]:
    """Every key of ``cls`` (sections recursed into), with its type, default, checked range and help text."""
    hints = typing.get_type_hints(cls)
    ranges = _checked_ranges(cls)
    rows: list[KeyInfo] = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            rows += describe_keys(tp, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            default = to_dict(default)
        choices = "one of " + ", ".join(map(str, typing.get_args(tp))) if typing.get_origin(tp) is Literal else ""
        rng = "; ".join(part for part in (choices, ranges.get(f.name, "")) if part)
        rows.append(KeyInfo(key, _type_text(tp), default, rng, " ".join(str(f.metadata.get("help", "")).split())))
    return rows
