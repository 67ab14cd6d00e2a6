"""Student training: a ``transformers.Trainer`` whose loss is ``losses.distillation_loss``.

``DistillationTrainer`` overrides ``compute_loss``, ``get_batch_samples`` (the Trainer's hook that counts the rows
of an optimizer step for the loss's normalisation; here the rows of each loss term over every accumulation
micro-batch and process) and a small ``log`` hook, as TRL's trainers have, that adds the running means of the loss
parts to each log record as ``kd_loss`` / ``ce_loss``. Batches carry ``labels``
(``[B]`` long, ``-1`` = no gold label) and ``teacher_logits`` (``[B, 3]`` float32, NaN rows = no teacher logits)
next to the tokenized inputs; ``DistillationCollator`` builds them.

``train_student`` is the one call the pipeline makes: build the student, tokenize, train, return the (unmerged)
model. Saving is ``student.save_student``'s job. With ``train.save_steps`` the scratch folder holds resumable
checkpoints and a rerun of the same training resumes from the newest complete one. Under FSDP or DeepSpeed the
trained parameters may be sharded across processes: ``train_student`` gathers them through accelerate into a plain
model before returning, so saving (and merging LoRA) sees whole weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from findistill.config import LABELS, ConfigError, StudentConfig, TrainConfig, drop_added_defaults, to_dict
from findistill.distributed import on_main
from findistill.errors import DataError, first_line
from findistill.evaluation.metrics import classification_metrics
from findistill.io import atomic_write_text
from findistill.training.losses import distillation_loss, loss_row_counts
from findistill.models.student import build_student, count_parameters

__all__ = [
    "CheckpointEverySteps",
    "DistillationTrainer",
    "DistillationCollator",
    "DistillationDataset",
    "EvaluateLastStep",
    "TrainResult",
    "build_train_dataset",
    "dev_metrics",
    "full_model",
    "train_student",
    "training_arguments",
    "unsharded_copy",
]

_TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


class DistillationDataset(torch.utils.data.Dataset):
    """Tokenized rows: token fields (lists of ints), ``labels`` (int) and ``teacher_logits`` (``[C]`` floats)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: np.ndarray, teacher_logits: np.ndarray):
        self.encodings = encodings
        self.labels = labels  # [N] int64
        self.teacher_logits = teacher_logits  # [N, C] float32, NaN rows = none

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {k: v[i] for k, v in self.encodings.items()}
        row["labels"] = int(self.labels[i])
        row["teacher_logits"] = self.teacher_logits[i]
        return row


def build_train_dataset(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    labels: list[int],
    teacher_logits: np.ndarray | None,
    max_length: int,
) -> DistillationDataset:
    """Tokenize ``texts`` (truncated to ``max_length``, unpadded) next to labels and teacher logits.

    ``teacher_logits`` is ``[N, C]`` (NaN rows allowed) or ``None`` (every row gets a NaN row: CE only).
    Raises ``DataError`` on mismatched lengths, labels outside ``-1..C-1`` or a wrong logits shape.
    """
    n, c = len(texts), len(LABELS)
    if len(labels) != n:
        raise DataError(f"{n} texts but {len(labels)} labels")
    label_arr = np.asarray(labels, dtype=np.int64).reshape(n)  # [N]
    if n and (label_arr.min() < -1 or label_arr.max() >= c):
        raise DataError(f"labels must be in -1..{c - 1} (-1 = no gold label)")
    if teacher_logits is None:
        logits = np.full((n, c), np.nan, dtype=np.float32)  # [N, C]
    else:
        logits = np.asarray(teacher_logits, dtype=np.float32)
        if logits.shape != (n, c):
            raise DataError(f"teacher logits must have shape ({n}, {c}), got {logits.shape}")
    encodings = tokenizer(list(texts), truncation=True, max_length=max_length)
    fields = {k: list(encodings[k]) for k in _TOKEN_FIELDS if k in encodings}
    return DistillationDataset(fields, label_arr, logits)


class DistillationCollator:
    """Pads the token fields with the tokenizer; stacks ``labels`` ``[B]`` and ``teacher_logits`` ``[B, C]``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = [{k: r[k] for k in _TOKEN_FIELDS if k in r} for r in rows]
        batch = dict(
            self.tokenizer.pad(tokens, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        )  # input_ids / attention_mask: [B, L]
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)  # [B]
        batch["teacher_logits"] = torch.as_tensor(
            np.stack([np.asarray(r["teacher_logits"], dtype=np.float32) for r in rows])
        )  # [B, C]
        return batch


class DistillationTrainer(Trainer):
    """``Trainer`` with the distillation loss; ``alpha``, ``temperature`` and ``label_smoothing`` are constructor
    keywords.

    Each term of a training step's loss is the mean over the step's rows for that term (rows with teacher logits for
    KD, gold rows for CE), across every accumulation micro-batch and every process: ``get_batch_samples`` counts
    them (``losses.loss_row_counts``, summed over the processes) and passes the counts as ``num_items_in_batch``, and
    ``compute_loss`` divides each micro-batch's sums by them. Averaging per micro-batch instead would weigh a
    process's (or micro-batch's) 1 gold row like another's 5 when batches mix gold and transfer rows. In one process
    without accumulation this is the batch mean, as before.
    """

    # compute_loss is normalised by the whole step's row counts: the Trainer must not divide it by the accumulation
    # steps again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, alpha: float = 0.5, temperature: float = 2.0, label_smoothing: float = 0.0,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)
        # mode -> part name -> detached per-micro-batch values since the last log
        self._loss_parts: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        labels = inputs.pop("labels")  # [B]
        teacher_logits = inputs.pop("teacher_logits", None)  # [B, C] or None
        outputs = model(**inputs)
        student_logits = outputs.logits  # [B, C]
        # training: num_items_in_batch holds get_batch_samples' counts [KD rows, gold rows] of the whole step;
        # evaluation (and a training_step called without them, right without accumulation only): per-batch means
        counts = num_items_in_batch if model.training and torch.is_tensor(num_items_in_batch) else None
        if counts is None:
            loss, parts = distillation_loss(student_logits, teacher_logits, labels, self.alpha, self.temperature,
                                            label_smoothing=self.label_smoothing)
        else:
            loss, parts = distillation_loss(student_logits, teacher_logits, labels, self.alpha, self.temperature,
                                            kd_count=counts[0], ce_count=counts[1],
                                            label_smoothing=self.label_smoothing)
            # DDP (and FSDP / ZeRO) average the processes' gradients; the step's loss is the sum of their parts
            loss = loss * self.accelerator.num_processes
        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            self._loss_parts[mode][f"{name}_loss"].append(value)
        return (loss, outputs) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The micro-batches of one optimizer step and, as ``num_items_in_batch``, the step's row counts over every
        process: ``[rows with teacher logits, rows with a gold label]`` (float32 ``[2]`` on ``device``)."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2)
        for batch in batch_samples:
            counts += loss_row_counts(batch["labels"].cpu(), batch.get("teacher_logits")).cpu()
        counts = counts.to(device)
        if self.accelerator.num_processes > 1:  # a collective: every process fetches the same number of steps
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batch_samples, counts

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean ``kd_loss`` / ``ce_loss`` since the last log (``eval_`` prefixed after evaluation)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        parts = self._loss_parts[mode]
        if parts and ("loss" in logs or mode == "eval"):
            prefix = "eval_" if mode == "eval" else ""
            for name, values in parts.items():
                logs[f"{prefix}{name}"] = torch.stack(values).mean().item()
            parts.clear()
        super().log(logs, start_time)


@dataclass
class TrainResult:
    # trained, adapters not merged; None on the non-main ranks of a sharded (FSDP / DeepSpeed) run, whose weights
    # are gathered on the main process only
    model: torch.nn.Module | None
    tokenizer: PreTrainedTokenizerBase
    wall_time_s: float
    steps: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    selected_step: int | None = None  # the optimizer step of the returned weights (dev selection), else the last
    selected_dev_metric: float | None = None  # its dev score (train.selection_metric)


def _precision_flags(precision: str) -> dict[str, bool]:
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return {"bf16": bool(cuda and torch.cuda.is_bf16_supported())}
    if precision == "bf16":
        return {"bf16": True}
    if precision == "fp16":
        if not cuda:
            raise ConfigError("train.precision", "fp16 needs a CUDA device; use auto, fp32 or bf16")
        return {"fp16": True}
    return {}


def _selection_arguments(train_cfg: TrainConfig) -> dict[str, Any]:
    """Dev-set checkpoint selection: evaluate and save on the same schedule, reload the best checkpoint at the end."""
    schedule = {"eval_strategy": train_cfg.selection, "save_strategy": train_cfg.selection}
    if train_cfg.selection == "steps":
        schedule.update(eval_steps=train_cfg.selection_steps, save_steps=train_cfg.selection_steps)
    return {**schedule, "load_best_model_at_end": True, "metric_for_best_model": train_cfg.selection_metric,
            "greater_is_better": True}


class EvaluateLastStep(TrainerCallback):
    """With ``selection: steps``, the last step is scored and saved too, so every student's final weights compete
    (otherwise the steps after the last multiple of ``selection_steps`` could never be selected)."""

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = control.should_save = True
        return control


class CheckpointEverySteps(TrainerCallback):
    """``train.save_steps``: a resumable checkpoint every N optimizer steps, on top of the dev-selection saves (the
    Trainer has one save schedule, and with ``load_best_model_at_end`` it must be the evaluation schedule)."""

    def __init__(self, save_steps: int):
        self.save_steps = save_steps

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step % self.save_steps == 0:
            control.should_save = True
        return control


def training_arguments(train_cfg: TrainConfig, output_dir: Path, select_on_dev: bool = False) -> TrainingArguments:
    """``TrainingArguments`` from the run config, then ``train_cfg.trainer_kwargs`` (no reporting by default).

    Without ``select_on_dev`` no selection checkpoint is written and the last step is kept; with it (and
    ``train_cfg.selection`` other than ``none``) the Trainer scores the dev set on the configured schedule, keeps
    the best checkpoint (``load_best_model_at_end``) and ties go to the earlier one. Checkpoints hold the weights
    only, unless ``train_cfg.save_steps`` asks for resumable ones (optimizer, scheduler and RNG states too).
    A value ``TrainingArguments`` refuses raises ``ConfigError`` naming ``train.trainer_kwargs`` when any are set.
    """
    selection = _selection_arguments(train_cfg) if select_on_dev and train_cfg.selection != "none" else {
        "save_strategy": "no"}
    # plain defaults that train.trainer_kwargs may override (config.TRAINER_OWNED_ARGUMENTS lists the others)
    defaults = {"report_to": "none", "dataloader_num_workers": 0, "use_cpu": not torch.cuda.is_available()}
    try:
        return TrainingArguments(**{**defaults, **_owned_arguments(train_cfg, output_dir, selection),
                                    **train_cfg.trainer_kwargs})
    except ValueError as err:
        if not train_cfg.trainer_kwargs:
            raise
        raise ConfigError("train.trainer_kwargs", f"TrainingArguments refused them: {first_line(err)}") from err


def _owned_arguments(train_cfg: TrainConfig, output_dir: Path, selection: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainingArguments`` fields findistill sets (``config.TRAINER_OWNED_ARGUMENTS``)."""
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=train_cfg.epochs,
        max_steps=train_cfg.max_steps,
        learning_rate=train_cfg.learning_rate,
        per_device_train_batch_size=train_cfg.batch_size,
        per_device_eval_batch_size=train_cfg.eval_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        weight_decay=train_cfg.weight_decay,
        warmup_steps=train_cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio (warmup_ratio is gone)
        lr_scheduler_type=train_cfg.lr_scheduler,
        logging_strategy="steps",
        logging_steps=train_cfg.logging_steps,
        seed=train_cfg.seed,
        remove_unused_columns=False,  # keep labels / teacher_logits for compute_loss
        label_names=["labels"],
        save_total_limit=train_cfg.save_total_limit,
        save_only_model=train_cfg.save_steps is None,
        **selection,
        **_precision_flags(train_cfg.precision),
    )


def dev_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` of the dev evaluations: accuracy and macro-F1 of the argmax."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    metrics = classification_metrics(np.asarray(prediction.label_ids), np.asarray(logits).argmax(-1))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def train_student(
    student_cfg: StudentConfig,
    train_cfg: TrainConfig,
    texts: list[str],
    labels: list[int],
    teacher_logits: np.ndarray | None,
    output_dir: Path,
    alpha: float | None = None,
    dev: tuple[list[str], list[int]] | None = None,
) -> TrainResult:
    """Build and train a student on ``texts``; returns the trained, unmerged model.

    ``labels``: canonical ids, ``-1`` for rows without a gold label (KD only). ``teacher_logits``: ``[N, 3]`` with
    NaN rows for texts the teacher did not label, or ``None`` for a CE-only student (alpha is then forced to 0).
    ``alpha`` overrides ``train_cfg.alpha``. ``dev``: ``(texts, gold labels)`` scored on the ``train_cfg.selection``
    schedule; the best checkpoint by ``train_cfg.selection_metric`` is the one returned (the same rule for every
    student). ``output_dir`` is the Trainer's scratch folder; its checkpoints are deleted when training ends.
    With ``train_cfg.save_steps``, a call whose inputs (configs, alpha, texts, labels, logits, dev) match those of
    an interrupted call on the same ``output_dir`` resumes from its newest complete checkpoint; other leftovers
    there are deleted first.
    """
    alpha = train_cfg.alpha if alpha is None else float(alpha)
    if teacher_logits is None:
        alpha = 0.0
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError("train.alpha", f"must be in [0, 1], got {alpha}")
    if not texts:
        raise DataError("no training texts")
    label_arr = np.asarray(labels)
    if teacher_logits is None and not (label_arr >= 0).any():
        raise DataError("no gold labels and no teacher logits: nothing to train the student on")

    select = dev is not None and train_cfg.selection != "none"
    if select and not len(dev[0]):
        raise DataError("checkpoint selection needs a non-empty dev split")
    resume = None
    if train_cfg.save_steps is not None:
        key = _training_key(student_cfg, train_cfg, alpha, texts, label_arr, teacher_logits, dev)
        resume = _resume_point(Path(output_dir), key)
    callbacks: list[TrainerCallback] = [EvaluateLastStep()] if select and train_cfg.selection == "steps" else []
    if train_cfg.save_steps is not None:
        callbacks.append(CheckpointEverySteps(train_cfg.save_steps))

    set_seed(train_cfg.seed)  # the new head's initialisation and LoRA's are seeded too
    model, tokenizer = build_student(student_cfg, num_labels=len(LABELS))
    dataset = build_train_dataset(tokenizer, texts, labels, teacher_logits, student_cfg.max_length)
    trainer = DistillationTrainer(
        model=model,
        args=training_arguments(train_cfg, Path(output_dir), select_on_dev=select),
        train_dataset=dataset,
        eval_dataset=build_train_dataset(tokenizer, dev[0], dev[1], None, student_cfg.max_length) if select else None,
        compute_metrics=dev_metrics if select else None,
        callbacks=callbacks or None,
        data_collator=DistillationCollator(tokenizer),
        processing_class=tokenizer,
        alpha=alpha,
        temperature=train_cfg.temperature,
        label_smoothing=train_cfg.label_smoothing,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    # checkpoints served selection and resume (every process has loaded the best one); the caller saves
    on_main(lambda: shutil.rmtree(output_dir, ignore_errors=True))
    model = full_model(trainer)
    total, trainable = count_parameters(model) if model is not None else (0, 0)
    if model is not None:
        model.eval()
    state = trainer.state
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        wall_time_s=wall,
        steps=state.global_step,
        log_history=list(state.log_history),
        total_params=total,
        trainable_params=trainable,
        selected_step=_checkpoint_step(state.best_model_checkpoint) if select else state.global_step,
        selected_dev_metric=state.best_metric if select else None,
    )


def _checkpoint_step(path: str | Path | None) -> int | None:
    """``.../checkpoint-1234`` -> 1234."""
    return int(Path(path).name.rsplit("-", 1)[1]) if path else None


def full_model(trainer: Trainer) -> torch.nn.Module | None:
    """The trained model with whole parameters (LoRA adapters not merged).

    In one process or under DDP every rank holds the whole model: the Trainer's model itself. Under FSDP or
    DeepSpeed (ZeRO-3 shards the parameters) the state dict is gathered through ``accelerator.get_state_dict``, the
    call ``Trainer.save_model`` makes (a collective: every rank must call this); accelerate returns it whole on the
    main process only, which loads it into a fresh, unsharded instance of the same architecture (and the same LoRA
    config). The other ranks get ``None``. DeepSpeed needs ``stage3_gather_16bit_weights_on_model_save: true``
    (the shipped ``configs/accelerate/deepspeed_zero3.yaml`` sets it); the gathered weights are then 16-bit.
    """
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        return trainer.model
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.accelerator.is_main_process:
        return None
    return unsharded_copy(trainer.accelerator.unwrap_model(trainer.model), state)


def unsharded_copy(trained: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh float32 instance of ``trained``'s architecture (a ``PeftModel`` with the same LoRA config when it is
    one) holding the whole state dict ``state``; ``trained``'s own, possibly sharded, parameters are never read."""
    from peft import PeftModel, get_peft_model

    base = trained.get_base_model() if isinstance(trained, PeftModel) else trained
    # the plain constructor (not from_pretrained / from_config) never enters DeepSpeed's zero.Init
    model = type(base)(copy.deepcopy(base.config))
    if isinstance(trained, PeftModel):
        model = get_peft_model(model, copy.deepcopy(trained.peft_config[trained.active_adapter]))
    model.load_state_dict(state)  # strict: every gathered tensor has its place
    return model


def _training_key(student_cfg: StudentConfig, train_cfg: TrainConfig, alpha: float, texts: list[str],
                  labels: np.ndarray, teacher_logits: np.ndarray | None,
                  dev: tuple[list[str], list[int]] | None) -> str:
    """sha256 of everything a training run depends on: a checkpoint resumes only the training it came from."""
    digest = hashlib.sha256()
    configs = {"student": to_dict(student_cfg), "train": drop_added_defaults(to_dict(train_cfg), "train."),
               "alpha": alpha}
    digest.update(json.dumps(configs, sort_keys=True, default=str).encode())
    digest.update(json.dumps([texts, dev[0] if dev else None, list(map(int, dev[1])) if dev else None]).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    if teacher_logits is not None:
        digest.update(np.ascontiguousarray(teacher_logits, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _resume_point(folder: Path, key: str) -> str | None:
    """The newest complete checkpoint an interrupted run with the same ``key`` left in ``folder``, else None.

    Complete = its ``trainer_state.json`` (the Trainer writes it after the weights, optimizer, scheduler and RNG
    states) parses; a kill during a save leaves an incomplete one, which is deleted. A folder written for another
    key (or none) is emptied, and the key written, before training starts. The main process tidies the folder;
    every process then resumes from the same checkpoint.
    """
    on_main(lambda: _tidy_checkpoints(folder, key))
    checkpoints = list(folder.glob("checkpoint-*"))
    return str(max(checkpoints, key=_checkpoint_step)) if checkpoints else None


def _tidy_checkpoints(folder: Path, key: str) -> None:
    """Keep only the complete checkpoints of ``key`` in ``folder`` (none when it was written for another key)."""
    marker = folder / "findistill_resume_key.txt"
    if marker.is_file() and marker.read_text() == key:
        for ckpt in folder.glob("checkpoint-*"):
            try:
                json.loads((ckpt / "trainer_state.json").read_text())
            except (OSError, ValueError):
                shutil.rmtree(ckpt)
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atomic_write_text(marker, key)
