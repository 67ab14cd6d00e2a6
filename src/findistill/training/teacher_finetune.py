"""Teacher fine-tuning: the teacher trained on gold labels (LoRA or all weights), selected on the dev split.

Two methods (``teacher.finetune.method``):

* ``verbalizer`` — cross-entropy over the class logits the teacher is *read* with: the prompt of
  :class:`~findistill.teacher.PromptedLMTeacher` (same ``build_prompt``, same left-cut encoding, left padding),
  the next-token logits at the last position, per class the log-sum-exp of its label words' log-probabilities
  (:func:`label_word_class_logits`, the reduction ``PromptedLMTeacher.class_logits`` applies). The saved folder is a
  plain causal LM that ``PromptedLMTeacher`` reads with the same prompt.
* ``head`` — ``AutoModelForSequenceClassification`` on the causal LM (``student.build_student``: canonical
  ``id2label``, pad token, peft ``SEQ_CLS`` so the ``score`` head trains fully) trained with the student trainer's
  CE-only loss on the raw texts. The saved folder is a sequence classifier that ``ClassifierTeacher`` reads.
  This method also tunes a ``classifier`` teacher (an encoder such as all-mpnet-base-v2), and with
  ``finetune.parameters: full`` it trains every weight instead of LoRA adapters.

Few-shot examples are not part of fine-tuning: prompts are built with ``few_shot = 0`` for training, dev selection
and the saved model (a tuned model no longer needs demonstrations; set ``teacher.few_shot: 0`` when you read it).
Selection uses the dev split only (never the evaluation file): dev accuracy / macro-F1 after every epoch; the
adapter weights of the epoch with the best dev macro-F1 (ties: the earlier epoch) are merged and saved, atomically,
with the tokenizer (chat template included) and ``finetune_summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from findistill.teachers.cache import texts_hash
from findistill.config import StudentConfig, TeacherConfig, TrainConfig, save_config
from findistill.data.splits import TextSplit, stratified_subsample
from findistill.distributed import barrier, on_main
from findistill.errors import DataError, ModelError, first_line
from findistill.io import atomic_directory, atomic_write_json

__all__ = ["finetune_teacher", "label_word_class_logits", "VerbalizerTrainer", "SUMMARY_FILE"]

log = logging.getLogger(__name__)
SUMMARY_FILE = "finetune_summary.json"


def label_word_class_logits(next_token_logits: torch.Tensor, label_token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, V]`` next-token logits -> ``[B, C]`` class logits: per class, logsumexp of its words' log-probs.

    The reduction ``PromptedLMTeacher.class_logits`` applies (log-softmax over the vocabulary first), here
    differentiable so the fine-tune optimises exactly what the teacher is read with.
    """
    log_probs = torch.log_softmax(next_token_logits.float(), dim=-1)  # [B, V]
    return torch.stack([torch.logsumexp(log_probs[:, list(ids)], dim=-1) for ids in label_token_ids], dim=-1)


class VerbalizerTrainer(Trainer):
    """``Trainer`` whose loss is CE over the label-word class logits at the last (left-padded) prompt position."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean: the Trainer divides it by the GA steps

    def __init__(self, *args: Any, label_token_ids: Sequence[Sequence[int]], keeps_last: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.label_token_ids = [list(ids) for ids in label_token_ids]
        self.keeps_last = keeps_last

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        labels = inputs.pop("labels")  # [B]
        extra = {"logits_to_keep": 1} if self.keeps_last else {}
        outputs = model(**inputs, use_cache=False, **extra)  # logits [B, 1 or L, V]
        class_logits = label_word_class_logits(outputs.logits[:, -1, :], self.label_token_ids)  # [B, C]
        loss = torch.nn.functional.cross_entropy(class_logits, labels)
        return (loss, {"logits": class_logits}) if return_outputs else loss


class _PromptCollator:
    """Left-pads encoded prompts with the teacher's own padding (``input_ids``, ``attention_mask``, positions)."""

    def __init__(self, teacher: Any):
        self.teacher = teacher

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {k: v.cpu() for k, v in self.teacher.pad([r["input_ids"] for r in rows]).items()}  # [B, L] each
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)  # [B]
        return batch


class _BestEpoch(TrainerCallback):
    """Dev accuracy / macro-F1 after every epoch; keeps a copy of the trainable weights of the best epoch."""

    def __init__(self, evaluate: Callable[[], dict[str, float]]):
        self.evaluate = evaluate
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None, **kwargs: Any):
        if model is None or (self.history and self.history[-1]["step"] == state.global_step):
            return control
        losses = [r["loss"] for r in state.log_history if "loss" in r]
        record = {"epoch": round(float(state.epoch or 0), 3), "step": int(state.global_step),
                  **self.evaluate(), "last_logged_loss": losses[-1] if losses else None}
        self.history.append(record)
        log.info("[teacher_finetune] epoch %.2f: dev accuracy %.4f, macro-F1 %.4f",
                 record["epoch"], record["accuracy"], record["macro_f1"])
        if self.best is None or record["macro_f1"] > self.best["macro_f1"]:
            self.best = record
            self.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return control

    def restore(self, model: torch.nn.Module) -> None:
        if self.best_state is None:
            raise ModelError("teacher fine-tune ran no epoch; nothing to save")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.best_state:
                    param.copy_(self.best_state[name])


def _metrics(labels: Sequence[int], logits: np.ndarray) -> dict[str, float]:
    from findistill.evaluation.metrics import classification_metrics

    m = classification_metrics(np.asarray(labels), np.asarray(logits).argmax(-1))
    return {"accuracy": round(m["accuracy"], 6), "macro_f1": round(m["macro_f1"], 6)}


def _train_config(cfg: TeacherConfig, n_train: int, seed: int) -> TrainConfig:
    ft = cfg.finetune
    steps_per_epoch = max(1, -(-n_train // ft.batch_size))
    return TrainConfig(epochs=ft.epochs, learning_rate=ft.learning_rate, batch_size=ft.batch_size, seed=seed,
                       logging_steps=max(1, steps_per_epoch // 10), eval_batch_size=cfg.batch_size,
                       trainer_kwargs=dict(ft.trainer_kwargs))


def _lora_config(cfg: TeacherConfig, model: torch.nn.Module, task: str) -> Any:
    from peft import LoraConfig

    from findistill.models.student import default_target_modules

    lora = cfg.finetune.lora
    targets = list(lora.target_modules) if lora.target_modules else default_target_modules(model)
    return LoraConfig(task_type=task, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets)


def _prepare_verbalizer(cfg: TeacherConfig, train: TextSplit, dev: TextSplit, device: torch.device):
    """(peft model, tokenizer, trainer kwargs, dev evaluator) for the ``verbalizer`` method."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from findistill.models.refs import resolve_model
    from findistill.teachers import PromptedLMTeacher

    resolved = resolve_model(cfg.model, cfg.revision)
    revision = None if Path(resolved).is_dir() else cfg.revision
    try:
        base = AutoModelForCausalLM.from_pretrained(resolved, revision=revision, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load teacher model {cfg.model!r}: {first_line(err)}") from None
    # The teacher object gives the exact prompt, encoding, padding and label-word ids used at inference time.
    reader = PromptedLMTeacher(dataclasses.replace(cfg, model=resolved), model=base, tokenizer=_tokenizer(resolved,
                               revision), device=device)
    base.config.use_cache = False
    peft_model = get_peft_model(base, _lora_config(cfg, base, "CAUSAL_LM"))  # LoRA injected into `base` in place
    rows = [{"input_ids": reader.encode(t), "labels": int(y)} for t, y in zip(train.texts, train.labels)]

    def evaluate() -> dict[str, float]:
        peft_model.eval()
        reader.device = next(peft_model.parameters()).device
        try:
            return _metrics(dev.labels, reader.class_logits(dev.texts, progress=False))
        finally:
            peft_model.train()

    kwargs = {"data_collator": _PromptCollator(reader), "label_token_ids": reader.label_token_ids,
              "keeps_last": reader.keeps_last}
    return peft_model, reader.tokenizer, rows, kwargs, evaluate


def _tokenizer(path: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the tokenizer of {path!r}: {first_line(err)}") from None


def _prepare_head(cfg: TeacherConfig, train: TextSplit, dev: TextSplit, device: torch.device):
    """(peft SEQ_CLS model, tokenizer, dataset, trainer kwargs, dev evaluator) for the ``head`` method."""
    from findistill.evaluation.metrics import predict_logits
    from findistill.models.student import build_student
    from findistill.training.trainer import DistillationCollator, build_train_dataset

    student_cfg = StudentConfig(model=cfg.model, revision=cfg.revision, name=cfg.name, method=cfg.finetune.parameters,
                                lora=cfg.finetune.lora, max_length=cfg.max_length)
    model, tokenizer = build_student(student_cfg)
    model.to(device)
    dataset = build_train_dataset(tokenizer, train.texts, train.labels, None, cfg.max_length)

    def evaluate() -> dict[str, float]:
        logits = predict_logits(model, tokenizer, dev.texts, batch_size=cfg.batch_size, max_length=cfg.max_length,
                                desc="dev")
        return _metrics(dev.labels, logits)

    kwargs = {"data_collator": DistillationCollator(tokenizer), "alpha": 0.0, "temperature": 1.0}
    return model, tokenizer, dataset, kwargs, evaluate


def finetune_teacher(cfg: TeacherConfig, train: TextSplit, dev: TextSplit, out_dir: Path, seed: int = 0,
                     transfer: TextSplit | None = None) -> dict:
    """Fine-tune ``cfg``'s teacher on ``train`` (gold labels), pick the best epoch on ``dev``, save it (LoRA merged).

    With ``cfg.finetune.self_training.enabled``, that teacher (round 0) then labels ``transfer`` and a fresh copy of
    the base model is fine-tuned on gold + its confident labels (round 1); dev keeps the better round
    (:func:`self_train`). Returns (and writes to ``out_dir/finetune_summary.json``) a summary: per-epoch dev accuracy
    / macro-F1, the dev metrics before training, the best epoch, wall times, trainable / total parameters.
    """
    ft = cfg.finetune
    if not (cfg.kind == "prompted_lm" or (cfg.kind == "classifier" and ft.method == "head")):
        raise ModelError(f"teacher fine-tuning needs a prompted_lm teacher, or a classifier teacher with method "
                         f"head; got kind {cfg.kind!r} with method {ft.method!r}")
    labelled = [i for i, y in enumerate(train.labels) if int(y) >= 0]
    if not labelled or not len(dev):
        raise DataError("teacher fine-tuning needs labelled training texts and a non-empty dev split")
    if ft.self_training.enabled and (transfer is None or not len(transfer)):
        raise DataError("teacher.finetune.self_training needs unlabelled transfer texts (data.transfer_files)")
    if cfg.few_shot:
        log.info("[teacher_finetune] few_shot=%d ignored: training, selection and the saved teacher use no "
                 "demonstrations (set teacher.few_shot: 0 to read the tuned teacher the same way)", cfg.few_shot)
    cfg0 = dataclasses.replace(cfg, few_shot=0)
    train = stratified_subsample(train.subset(labelled), ft.max_train_examples, seed)
    if ft.self_training.enabled:
        return self_train(cfg0, train, dev, transfer, Path(out_dir), seed)  # type: ignore[arg-type]
    return _fit_and_save(cfg0, train, dev, Path(out_dir), seed)


def self_train(cfg: TeacherConfig, train: TextSplit, dev: TextSplit, transfer: TextSplit, out_dir: Path,
               seed: int) -> dict:
    """Round 0 (gold) and round 1 (gold + round 0's confident labels of ``transfer``), each fine-tuned from the base
    model and saved beside ``out_dir``; the round with the better dev macro-F1 (ties: round 0) becomes ``out_dir``.
    A finished round is reused after an interruption."""
    from findistill.teachers import build_teacher, tuned_teacher_config

    st = cfg.finetune.self_training
    rounds = [out_dir.parent / f".{out_dir.name}.round{k}" for k in (0, 1)]
    summaries = [_finished(rounds[0]) or _fit_and_save(cfg, train, dev, rounds[0], seed)]
    barrier()  # under several processes the main one saved round 0; every process reads it next
    reader = build_teacher(tuned_teacher_config(cfg, rounds[0]))  # round 0, read as the pipeline reads a tuned teacher
    probs = torch.softmax(torch.from_numpy(np.asarray(reader.class_logits(transfer.texts), dtype=np.float32)),
                          dim=-1).numpy()  # [N, 3]
    reader.release()
    confident = np.flatnonzero(probs.max(1) >= st.min_confidence)
    if st.max_texts is not None and len(confident) > st.max_texts:
        confident = np.sort(np.random.default_rng(seed).choice(confident, st.max_texts, replace=False))
    if not len(confident):
        raise DataError(f"teacher.finetune.self_training: no transfer text has a round-0 class probability >= "
                        f"{st.min_confidence}; lower teacher.finetune.self_training.min_confidence")
    pseudo = transfer.subset(confident.tolist())
    pseudo = TextSplit("pseudo", pseudo.texts, [int(c) for c in probs[confident].argmax(1)])
    log.info("[teacher_finetune] self-training: %d of %d transfer texts at confidence >= %g (%s)", len(pseudo),
             len(transfer), st.min_confidence, pseudo.label_counts())
    both = TextSplit(train.name, list(train.texts) + list(pseudo.texts), list(train.labels) + list(pseudo.labels))
    summaries.append(_finished(rounds[1]) or _fit_and_save(cfg, both, dev, rounds[1], seed))
    barrier()
    kept = 1 if summaries[1]["best"]["macro_f1"] > summaries[0]["best"]["macro_f1"] else 0
    summary = {**summaries[kept], "self_training": {
        **dataclasses.asdict(st), "transfer_texts": len(transfer), "pseudo_texts": len(pseudo),
        "pseudo_label_counts": pseudo.label_counts(), "kept_round": kept,
        "rounds": [{"round": k, "train_examples": s["train_examples"], "best_epoch": s["best_epoch"],
                    "best": s["best"], "history": s["history"], "train_wall_time_s": s["train_wall_time_s"]}
                   for k, s in enumerate(summaries)],
        "selection": "the round with the higher dev macro-F1 (ties: round 0); the evaluation split is unused"}}

    def keep() -> None:
        atomic_write_json(rounds[kept] / SUMMARY_FILE, summary)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(rounds[kept], out_dir)
        shutil.rmtree(rounds[1 - kept], ignore_errors=True)

    on_main(keep)
    log.info("[teacher_finetune] self-training: dev keeps round %d (macro-F1 %.4f vs %.4f)", kept,
             summaries[kept]["best"]["macro_f1"], summaries[1 - kept]["best"]["macro_f1"])
    return summary


def _finished(folder: Path) -> dict | None:
    """The summary of a round saved before an interruption (its folder is written atomically), else None."""
    path = folder / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fit_and_save(cfg0: TeacherConfig, train: TextSplit, dev: TextSplit, out_dir: Path, seed: int) -> dict:
    """One fine-tune of the base model on ``train`` (gold or pseudo labels), the best dev epoch saved to ``out_dir``."""
    from transformers import set_seed

    from findistill.models.student import count_parameters
    from findistill.models.devices import pick_device, pick_dtype
    from findistill.training.trainer import DistillationTrainer, training_arguments

    ft = cfg0.finetune
    out_dir = Path(out_dir)
    start = time.perf_counter()
    set_seed(seed)
    device = pick_device(None)
    prepare = _prepare_verbalizer if ft.method == "verbalizer" else _prepare_head
    model, tokenizer, dataset, kwargs, evaluate = prepare(cfg0, train, dev, device)
    total, trainable = count_parameters(model)
    log.info("[teacher_finetune] %s (%s): %d train / %d dev texts, %s trainable of %s parameters",
             ft.method, ft.parameters, len(train), len(dev), f"{trainable:,}", f"{total:,}")
    before = evaluate()
    log.info("[teacher_finetune] before: dev accuracy %.4f, macro-F1 %.4f", before["accuracy"], before["macro_f1"])

    scratch = out_dir.parent / f".{out_dir.name}.train"
    best = _BestEpoch(evaluate)
    trainer_cls = VerbalizerTrainer if ft.method == "verbalizer" else DistillationTrainer
    trainer = trainer_cls(model=model, args=training_arguments(_train_config(cfg0, len(train), seed), scratch),
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[best], **kwargs)
    train_start = time.perf_counter()
    output = trainer.train()
    train_wall = time.perf_counter() - train_start
    shutil.rmtree(scratch, ignore_errors=True)
    best.restore(model)

    model.eval()
    # plain transformers model (with the best epoch's LoRA merged in, when LoRA trained)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.to(dtype=pick_dtype(cfg0.dtype, device))
    if ft.method == "verbalizer":
        merged.config.use_cache = True
    summary = {
        "method": ft.method, "model": cfg0.model, "revision": cfg0.revision, "seed": seed,
        "train_examples": len(train), "train_label_counts": train.label_counts(), "dev_examples": len(dev),
        "train_texts_sha256": texts_hash(train.texts),  # which texts it saw (cross-fitting is checked against it)
        "epochs": ft.epochs, "learning_rate": ft.learning_rate, "batch_size": ft.batch_size,
        "parameters": ft.parameters, "lora": dataclasses.asdict(ft.lora) if ft.parameters == "lora" else None,
        "few_shot": 0, "prompt": cfg0.prompt if ft.method == "verbalizer" else None,
        "total_params": total, "trainable_params": trainable, "dev_before": before, "history": best.history,
        "best_epoch": best.best["epoch"] if best.best else None, "best": best.best,
        "selection": "highest dev macro-F1 over the epochs (ties: the earlier epoch); the evaluation split is unused",
        "train_loss": round(float(output.training_loss), 6), "steps": int(trainer.state.global_step),
        "train_wall_time_s": round(train_wall, 1),
        "train_examples_per_s": round(len(train) * ft.epochs / train_wall, 2),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }

    def save() -> None:
        with atomic_directory(out_dir) as tmp:
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)  # chat template included
            save_config(cfg0, tmp / "teacher_config.yaml")
            atomic_write_json(tmp / SUMMARY_FILE, summary)

    on_main(save)  # under accelerate launch every process trained the same weights (DDP); one writes them
    log.info("[teacher_finetune] best epoch %s (dev macro-F1 %.4f), saved to %s in %.0f s", summary["best_epoch"],
             best.best["macro_f1"] if best.best else float("nan"), out_dir, summary["wall_time_s"])
    return summary
