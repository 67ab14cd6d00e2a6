"""The stages of `findistill run`: data → teacher → labels → students → evaluation → report.

Each stage's output is keyed by what it depends on: the config sections it reads, the data it reads (content hashes)
and the keys of the stages it reads from (:func:`stage_inputs`). ``<run>/stages.json`` holds, per stage, the key and
inputs its output was made from; a stage runs when that record is missing, unfinished or holds another key, or its
output is gone, and a stage that runs clears the records of the stages downstream of it. So changing ``train.alpha``
re-runs the distilled student and the report only, changing the student re-uses the teacher and its labels, and
changing the teacher re-labels. :meth:`Run.plan` says which stages would run and why (``findistill run --dry-run``).
Run folder layout::

    <run>/config.yaml                 the resolved config of the last command
    <run>/stages.json                 per stage: key, inputs, finished (see above)
    <run>/data.json                   dataset info: sizes, label counts, cross-split duplicates
    <run>/teacher/                    the fine-tuned teacher (merged), when teacher.finetune.enabled
    <run>/teacher_folds/fold_<k>/     cross-fitted teachers (teacher.finetune.cross_fit_folds), each blind to fold k
    <run>/cache/                      teacher class logits in chunks (findistill.teachers.cache) + teacher-<key>.json identities
                                      (cache.dir: one folder shared by runs instead, paraphrase files too)
    <run>/teacher_logits/             per-split logits of runs made before the chunked cache (read, never written)
    <run>/augment/                    paraphrase candidates (resumable JSONL), the filter's counts, the kept rows
    <run>/predictions/<role>.npz      [N, 3] logits of each model on the evaluation split + its metadata
    <run>/student_ce/                 the CE-only student (plain Hugging Face folder)
    <run>/student/                    the distilled student, LoRA merged (plain Hugging Face folder)
    <run>/student*/training_log.json  the Trainer's log: loss, kd_loss, ce_loss per logging step, dev scores
    <run>/results.json, report.md     the results contract
    <run>/analysis/, report.html      slices, entity swap, probes, calibration (findistill.analysis.analyze)

A folder written before stage keys (no ``stages.json``) is adopted: each stage whose output is there is recorded
under the keys of the config it was made with (its ``config.yaml``; the current config when there is none), so
only what that config change touches re-runs.

Under ``accelerate launch --num_processes N`` (:mod:`findistill.distributed`) every process runs every stage in the
same order and keeps the same stage records in memory. Teacher labelling is split by chunks (chunk i of a list by
process i mod N) and the cache is read once all shards are written; the teacher fine-tune and the students train
with the Trainer's DDP; everything else (evaluations, augmentation, report, analysis) and every file outside the
cache is done and written by the main process. A stage that runs starts and ends with a barrier, so each process
decides from the same folder and reads only whole files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import gc
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from findistill.config import LABELS, RunConfig, dump_config, save_config
from findistill.data.splits import DatasetSplits, TextSplit, load_splits
from findistill.distributed import barrier, is_main, on_main, rank_world
from findistill.evaluation.prediction import Prediction
from findistill.pipeline.legacy import adopt, legacy_teacher_logits
from findistill.pipeline.stages import (DEPENDS, STAGE_OUTPUTS, STAGES, data_hashes, describe_change, downstream,
                                        short_hash, stage_inputs, stage_key, teacher_inputs)
from findistill.io import atomic_write_json, folder_lock

log = logging.getLogger(__name__)

def _say(message: str) -> None:
    """Stage banners go to stderr-visible logging so long runs show where they are."""
    log.info(message)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """One run folder and the stages that fill it; models are loaded only when a stage needs them."""

    def __init__(self, config: RunConfig, out_dir: Path, data_dir: str | None = None):
        self.config = config
        self.out = Path(out_dir)
        self.data_dir = data_dir
        self._splits: DatasetSplits | None = None
        self._data_hashes: dict | None = None
        self._records: dict | None = None
        self._teacher = None

    # ------------------------------------------------------------------ shared pieces
    @property
    def splits(self) -> DatasetSplits:
        if self._splits is None:
            _say("[data] loading splits")
            self._splits = load_splits(self.config.data, self.data_dir)
        return self._splits

    @property
    def data_hashes(self) -> dict:
        if self._data_hashes is None:
            self._data_hashes = data_hashes(self.splits)
        return self._data_hashes

    def prediction_path(self, role: str) -> Path:
        return self.out / "predictions" / f"{role}.npz"

    def teacher_config(self, tuned: Path | None = None):
        """The teacher as configured, or pointing at a fine-tuned teacher folder (default ``<run>/teacher``)."""
        from findistill.teachers import tuned_teacher_config

        cfg = self.config.teacher
        return tuned_teacher_config(cfg, tuned or self.out / "teacher") if cfg.finetune.enabled else cfg

    def teacher_key(self, fold: int | None = None) -> str:
        """Hash of the teacher's inputs (config, few-shot pool, fine-tune); ``fold``: a cross-fitted fold teacher."""
        inputs = teacher_inputs(self.config, self.data_hashes)
        return short_hash(inputs if fold is None else {**inputs, "fold": fold})

    def _cached_teacher(self, cfg, pool: TextSplit, identity_key: str):
        """A :class:`~findistill.cache.CachedTeacher` that loads the teacher of ``cfg`` (few-shot examples from
        ``pool``) only when a chunk is missing or its identity file is."""
        from findistill.teachers.cache import CachedTeacher

        def load():
            from findistill.teachers import build_teacher

            _say(f"[teacher] loading {cfg.display_name}")
            return build_teacher(cfg, pool.texts, pool.labels, seed=self.config.data.seed)

        return CachedTeacher(load, self.cache_dir, chunk_size=self.config.cache.chunk_size, identity_key=identity_key)

    @property
    def cache_dir(self) -> Path:
        return cache_folder(self.config, self.out, "cache")

    @property
    def paraphrase_dir(self) -> Path:
        return cache_folder(self.config, self.out, "augment")

    @property
    def teacher(self):
        """The cached teacher; its model is loaded on first need only."""
        if self._teacher is None:
            self._teacher = self._cached_teacher(self.teacher_config(), self.splits.train, self.teacher_key())
        return self._teacher

    def teacher_logits(self, split: TextSplit, teacher=None, key_extra: dict | None = None) -> np.ndarray:
        """The teacher's ``[N, 3]`` logits for a split, from the chunked cache (the teacher runs on missing chunks).

        ``teacher`` (default: the run's teacher) and ``key_extra`` serve the cross-fitted fold teachers.
        """
        legacy = legacy_teacher_logits(self, split, key_extra)
        if legacy is not None:
            return legacy
        return (teacher or self.teacher).class_logits(split.texts)

    # ------------------------------------------------------------------ cross-fitting
    def fold_dir(self, k: int) -> Path:
        return self.out / "teacher_folds" / f"fold_{k}"

    def teacher_fold_summaries(self) -> list[dict[str, Any]]:
        """Each cross-fitted teacher's training size, selected epoch and dev score (the selection split; the
        evaluation split is never used); empty when the teacher is not cross-fitted."""
        return [{"fold": p.parent.name, **{k: json.loads(p.read_text())[k] for k in ("train_examples", "best_epoch",
                                                                                      "best")}}
                for p in sorted((self.out / "teacher_folds").glob("fold_*/finetune_summary.json"))]

    def folds(self) -> list[list[int]]:
        """Training-row indices of each cross-fitting fold (stratified, seeded by ``data.seed``)."""
        from findistill.data.splits import stratified_folds

        return stratified_folds(self.splits.train.labels, self.config.teacher.finetune.cross_fit_folds,
                                self.config.data.seed)

    def _cross_fitted(self) -> bool:
        return bool(self.config.teacher.finetune.enabled and self.config.teacher.finetune.cross_fit_folds)

    def _fold_jobs(self) -> list[tuple[Any, TextSplit, list[int], dict]]:
        """Per fold k: (its cached fold teacher, its held-out training texts, their rows, the legacy key extra)."""
        train, k_folds = self.splits.train, self.config.teacher.finetune.cross_fit_folds
        jobs = []
        for k, rows in enumerate(self.folds()):
            held_out = train.subset(rows)
            held_out.name = f"train_fold_{k}"
            seen = train.subset(sorted(set(range(len(train))) - set(rows)))  # its few-shot pool, if any
            teacher = self._cached_teacher(self.teacher_config(self.fold_dir(k)), seen, self.teacher_key(fold=k))
            jobs.append((teacher, held_out, rows, {"cross_fit_folds": k_folds, "fold": k}))
        return jobs

    def train_teacher_logits(self) -> np.ndarray:
        """Soft labels of the training rows: out-of-fold when cross-fitting is on, else the teacher's own.

        Out-of-fold: row i gets the logits of the fold teacher that did not see row i in its fine-tune.
        """
        train = self.splits.train
        if not self._cross_fitted():
            return self.teacher_logits(train)
        out = np.full((len(train), 3), np.nan, dtype=np.float32)
        for teacher, held_out, rows, extra in self._fold_jobs():
            out[rows] = self.teacher_logits(held_out, teacher=teacher, key_extra=extra)
            teacher.release()
        return out

    # ------------------------------------------------------------------ stage records
    def stage_inputs(self, stage: str) -> dict | None:
        return stage_inputs(self.config, self.data_hashes, stage)

    def stage_key(self, stage: str) -> str | None:
        return stage_key(self.config, self.data_hashes, stage)

    def stage_records(self) -> dict:
        """``stages.json`` (``{"stages": {stage: {key, inputs, finished}}, ...}``); an older folder is adopted."""
        if self._records is None:
            path = self.out / "stages.json"
            self._records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else adopt(self)
        return self._records

    def write_stage_records(self) -> None:
        """``stages.json`` from the records in memory (the main process writes; every process keeps the same)."""
        if is_main():
            atomic_write_json(self.out / "stages.json", {"version": 1, **self.stage_records()})

    def outputs_present(self, stage: str) -> bool:
        return all((self.out / p).exists() for p in STAGE_OUTPUTS[stage])

    def stale_reason(self, stage: str) -> str | None:
        """Why ``stage`` must run (None: its output is up to date)."""
        record = self.stage_records()["stages"].get(stage)
        inputs = self.stage_inputs(stage)
        if record is None:
            return "no output yet"
        if record["key"] != short_hash(inputs):
            return describe_change(record.get("inputs", {}), inputs)
        if not record.get("finished"):
            return "interrupted: resumes"
        missing = [p for p in STAGE_OUTPUTS[stage] if not (self.out / p).exists()]
        return f"{missing[0]} is missing" if missing else None

    def plan(self, stages: tuple[str, ...] = STAGES) -> list[tuple[str, str, str]]:
        """(stage, "run" / "skip" / "off", why) for each of ``stages`` in pipeline order; runs nothing."""
        rows, running = [], set()
        for stage in STAGES:
            if stage not in stages:
                continue
            if self.stage_inputs(stage) is None:
                rows.append((stage, "off", "not enabled in this config"))
                continue
            why = self.stale_reason(stage)
            upstream = [d for d in DEPENDS[stage] if d in running]
            if why is None and upstream:
                why = f"{', '.join(upstream)} runs"
            if why is None:
                rows.append((stage, "skip", f"up to date (key {self.stage_key(stage)})"))
            else:
                running.add(stage)
                rows.append((stage, "run", why))
        return rows

    def _begin(self, stage: str) -> bool:
        """True when ``stage`` must run: its record becomes unfinished under the new key, the records downstream
        of it are dropped (they read its output), and the output of another key is removed where the stage would
        otherwise resume from it. False when the stage is off or up to date."""
        inputs = self.stage_inputs(stage)
        if inputs is None:
            return False
        why = self.stale_reason(stage)
        if why is None:
            _say(f"[{stage}] up to date")
            return False
        records = self.stage_records()["stages"]
        key = short_hash(inputs)
        if stage == "teacher_finetune" and records.get(stage, {}).get("key") != key and is_main():
            for folder in (self.out / "teacher", self.out / "teacher_folds"):
                shutil.rmtree(folder, ignore_errors=True)
            for folder in self.out.glob(".teacher.round*"):  # self-training rounds of another config
                shutil.rmtree(folder, ignore_errors=True)
        for name in downstream(stage):
            records.pop(name, None)
        records[stage] = {"key": key, "inputs": inputs, "finished": None}
        self.write_stage_records()
        barrier()  # every process decided from the same folder; it now changes
        _say(f"[{stage}] runs: {why}")
        return True

    def _finish(self, stage: str) -> None:
        """Record ``stage`` as done once every process is done with it (the main process's files are whole)."""
        barrier()
        self.stage_records()["stages"][stage]["finished"] = _now()
        self.write_stage_records()

    # ------------------------------------------------------------------ stages
    def stage_teacher_finetune(self) -> None:
        if not self._begin("teacher_finetune"):
            return
        from findistill.training.teacher_finetune import finetune_teacher

        ft = self.config.teacher.finetune
        seed = self.config.data.seed if ft.seed is None else ft.seed
        transfer = self.splits.transfer if ft.self_training.enabled else None  # held-out slices never in it
        target = self.out / "teacher"
        if (target / "config.json").is_file():  # finished before an interruption of this stage
            _say(f"[teacher_finetune] reusing {target}")
        else:
            _say(f"[teacher_finetune] fine-tuning the teacher on gold labels ({ft.parameters}; dev split for "
                 "selection)")
            finetune_teacher(self.config.teacher, self.splits.train, self.splits.dev, target, seed=seed,
                             transfer=transfer)
        train = self.splits.train
        for k, rows in enumerate(self.folds() if ft.cross_fit_folds else []):
            if (self.fold_dir(k) / "config.json").is_file():
                continue
            held_out = set(rows)
            _say(f"[teacher_finetune] cross-fitting: fold teacher {k + 1}/{ft.cross_fit_folds}, blind to "
                 f"{len(rows)} training texts")
            finetune_teacher(self.config.teacher, train.subset([i for i in range(len(train)) if i not in held_out]),
                             self.splits.dev, self.fold_dir(k), seed=seed, transfer=transfer)
        self._finish("teacher_finetune")

    def stage_teacher_check(self) -> None:
        """The health gate: the teacher on the dev split (no evaluation text) before it labels anything a student
        learns from. The check is made once (``teacher_check.json``); the gate is applied on every run, so changing
        ``teacher.min_class_recall`` or ``teacher.health_gate`` re-runs no teacher or student stage."""
        if self._begin("teacher_check"):
            from findistill.evaluation.metrics import health_check

            dev = self.splits.dev
            _say(f"[teacher_check] the teacher on {len(dev)} dev texts before it labels anything")
            self.label_chunks(self.teacher, dev)
            barrier()  # every process's chunks are written
            if is_main():
                check = health_check(dev.labels, self.teacher_logits(dev), self.splits.train.labels)
                atomic_write_json(self.out / "teacher_check.json", {"teacher": self.teacher.name, **check})
            self._finish("teacher_check")
        self.apply_teacher_gate()

    def teacher_check(self) -> dict | None:
        """``teacher_check.json`` with the gate's verdict under the current config (``problems``, ``min_class_recall``,
        ``health_gate``); None before the check ran."""
        from findistill.evaluation.metrics import health_problems

        path = self.out / "teacher_check.json"
        if not path.is_file():
            return None
        check = json.loads(path.read_text(encoding="utf-8"))
        cfg = self.config.teacher
        return {**check, "min_class_recall": cfg.min_class_recall, "health_gate": cfg.health_gate,
                "problems": health_problems(check, cfg.min_class_recall)}

    def apply_teacher_gate(self) -> None:
        """Stop with one line when the teacher failed its dev check (unless ``teacher.health_gate`` is false)."""
        from findistill.errors import TeacherHealthError

        check = self.teacher_check()
        problems = check["problems"] if check else []
        if not problems:
            if check:
                _say(f"[teacher_check] passed: dev accuracy {check['accuracy']:.3f} (majority class "
                     f"{check['majority']['accuracy']:.3f}), recall " + ", ".join(
                         f"{name} {r:.2f}" for name, r in check["recall"].items()))
            return
        if not self.config.teacher.health_gate:
            log.warning("[teacher_check] %s; going on (teacher.health_gate: false)", "; ".join(problems))
            return
        below_majority = check["accuracy"] < check["majority"]["accuracy"]
        override = "--set teacher.health_gate=false" if below_majority else \
            "--set teacher.min_class_recall=0 (or teacher.health_gate=false)"
        raise TeacherHealthError(f"{'; '.join(problems)}. A student would learn the same, so nothing was labelled; "
                                 f"fix the teacher, or distil it anyway with {override}")

    def transfer_sources(self) -> dict[str, dict] | None:
        """Per ``data.transfer_files`` entry: texts read and kept, and the classes the teacher gave the kept ones (from
        the cache, once the label stage has finished; None before, or without transfer texts)."""
        from findistill.evaluation.metrics import transfer_source_labels

        transfer = self.splits.transfer
        if transfer is None or not len(transfer) or transfer.sources is None or \
                not self.stage_records()["stages"].get("label", {}).get("finished"):
            return None
        labels = transfer_source_labels(transfer.sources, self.teacher_logits(transfer))
        counts = self.splits.transfer_report.get("sources", {})
        return {name: {**counts.get(name, {}), "teacher_labels": labels.get(name, {c: 0 for c in LABELS})}
                for name in counts}

    def stage_teacher_eval(self) -> None:
        if not self._begin("teacher_eval"):
            return
        ev = self.splits.eval
        _say(f"[teacher_eval] teacher on {ev.name} ({len(ev)} texts)")
        teacher = self.teacher
        texts_before, seconds_before = teacher.computed_texts, teacher.compute_seconds
        self.label_chunks(teacher, ev)
        computed, seconds = teacher.computed_texts - texts_before, teacher.compute_seconds - seconds_before
        barrier()  # every process's chunks are written
        if is_main():
            Prediction(teacher.name, "teacher", self.teacher_logits(ev), {
                "params": teacher.num_parameters, "trainable_params": 0,
                # Inference only (model load excluded); cached chunks, or chunks other processes labelled, measure
                # nothing about the model's speed.
                "examples_per_s": round(computed / seconds, 2) if computed == len(ev) and seconds > 0 else None,
            }).save(self.prediction_path("teacher"))
        self._finish("teacher_eval")

    def label_jobs(self) -> list[tuple[Any, TextSplit, dict | None]]:
        """(cached teacher, texts, legacy key extra) of every list the teacher labels: the evaluation split (when
        the teacher is evaluated), the training split (per fold when cross-fitted) and the transfer texts."""
        splits = self.splits
        jobs: list[tuple[Any, TextSplit, dict | None]] = []
        if self.config.evaluate_teacher:
            jobs.append((self.teacher, splits.eval, None))
        if self._cross_fitted():
            jobs += [(teacher, held_out, extra) for teacher, held_out, _, extra in self._fold_jobs()]
        else:
            jobs.append((self.teacher, splits.train, None))
        if splits.transfer is not None and len(splits.transfer):
            jobs.append((self.teacher, splits.transfer, None))
        if splits.holdout is not None and len(splits.holdout):
            jobs.append((self.teacher, splits.holdout, None))
        return jobs

    def label_chunks(self, teacher, split: TextSplit, key_extra: dict | None = None,
                     shard: tuple[int, int] | None = None) -> int:
        """Write the missing cache chunks of ``split`` that this process labels: chunk i when i mod N is this
        process's index among N processes (all of them in one process), within ``shard=(s, m)`` (chunks s, s+m, …)
        when given. Returns how many chunks this process holds; nothing is kept in memory, and a split already in
        ``<run>/teacher_logits/`` (a folder labelled before the chunked cache) needs none."""
        if legacy_teacher_logits(self, split, key_extra) is not None:
            return 0
        rank, world = rank_world()
        index, count = shard or (0, 1)
        return teacher.label_shard(split.texts, index + count * rank, count * world)

    def stage_label(self, shard: tuple[int, int] | None = None) -> None:
        """Teacher logits for every evaluation, training and transfer text, written to the chunked cache.

        ``shard=(i, n)``: only chunks i, i+n, i+2n, … of each list (``findistill label --shard i/n``); the stage is
        then not recorded as done, since the other shards' chunks are elsewhere until they are copied in.
        """
        if shard is None and not self._begin("label"):
            return
        for teacher, split, extra in self.label_jobs():
            where = "" if shard is None else f"shard {shard[0]}/{shard[1]}: "
            _say(f"[label] {where}teacher logits for {len(split)} {split.name} texts")
            held = self.label_chunks(teacher, split, extra, shard)
            _say(f"[label] {held} chunks of {split.name} labelled or found here, in {self.cache_dir}")
            if teacher is not self._teacher:
                teacher.release()
        self.release_teacher_model()  # the students train without the teacher in memory
        if shard is None:
            self._finish("label")

    def stage_augment(self) -> None:
        if not self._begin("augment"):
            return
        if is_main():  # generation is not split across processes: the others wait
            self._augment()
        self._finish("augment")

    def _augment(self) -> None:
        from findistill.data.augment import augment, load_generator

        cfg, splits = self.config.augment, self.splits
        others = splits.train.texts + splits.dev.texts + splits.eval.texts
        generator = cfg.model or self.teacher_config().model
        model, tokenizer = load_generator(generator, backend=self.config.teacher.backend)
        _say(f"[augment] paraphrasing training texts with {generator}; the teacher filters and labels them")
        result = augment(cfg, splits.train, others, model, tokenizer, self.teacher, self.paraphrase_dir)
        del model
        gc.collect()
        logits = result.teacher_logits
        if logits is None and len(result.texts):
            logits = self.teacher.class_logits(result.texts)
        atomic_write_json(self.out / "augment" / "summary.json", result.summary)
        atomic_write_json(self.out / "augment" / "kept.json", {
            "texts": result.texts, "labels": result.labels, "source_indices": result.source_indices,
            "teacher_logits": None if logits is None else np.asarray(logits, dtype=np.float32).tolist()})

    def augmented(self) -> dict | None:
        """The kept paraphrases (``augment/kept.json``) when augmentation is on."""
        path = self.out / "augment" / "kept.json"
        if not self.config.augment.enabled or not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def _training_set(self, with_teacher: bool) -> tuple[list[str], list[int], np.ndarray | None]:
        """Gold training texts (+ kept paraphrases, + transfer texts for KD), with teacher logits when needed."""
        splits = self.splits
        texts, labels = list(splits.train.texts), list(splits.train.labels)
        logits = [self.train_teacher_logits()] if with_teacher else []
        aug = self.augmented()
        if aug is not None and aug["texts"]:
            texts += aug["texts"]
            labels += aug["labels"]
            if with_teacher:
                logits.append(np.asarray(aug["teacher_logits"], dtype=np.float32).reshape(-1, 3))
        if with_teacher and splits.transfer is not None and len(splits.transfer):
            texts += splits.transfer.texts
            labels += [-1] * len(splits.transfer)  # no gold label: KD loss only
            logits.append(self.teacher_logits(splits.transfer))
        return texts, labels, (np.concatenate(logits).astype(np.float32) if with_teacher else None)

    def _evaluate_model(self, model, tokenizer, role: str, name: str, meta: dict) -> None:
        from findistill.evaluation.metrics import predict_logits
        from findistill.models.student import count_parameters

        ev = self.splits.eval
        start = time.perf_counter()
        logits = predict_logits(model, tokenizer, ev.texts, batch_size=self.config.train.eval_batch_size,
                                max_length=self.config.student.max_length, desc=f"eval {role}")
        seconds = time.perf_counter() - start
        holdout = self.splits.holdout
        held = None if holdout is None else predict_logits(
            model, tokenizer, holdout.texts, batch_size=self.config.train.eval_batch_size,
            max_length=self.config.student.max_length, desc=f"held-out transfer texts {role}")
        total, trainable = count_parameters(model)
        Prediction(name, role, logits, {"params": total, "trainable_params": trainable,
                                        "examples_per_s": round(len(ev) / seconds, 2), **meta}, held
                   ).save(self.prediction_path(role))

    def stage_student_baseline(self) -> None:
        if not self._begin("student_baseline"):
            return
        from transformers import set_seed

        from findistill.models.student import build_student

        if is_main():  # an evaluation only
            _say("[student_baseline] the student before any training on the task")
            set_seed(self.config.train.seed)  # the untrained head's initialisation, the same one training starts from
            model, tokenizer = build_student(self.config.student)
            self._evaluate_model(model, tokenizer, "student_baseline",
                                 f"{self.config.student.display_name} (untrained head)", {})
        self._finish("student_baseline")

    def _train(self, role: str, folder: str, with_teacher: bool) -> None:
        if not self._begin(role):
            return
        from findistill.models.student import save_student
        from findistill.training.trainer import train_student

        texts, labels, logits = self._training_set(with_teacher)
        if with_teacher:
            self.release_teacher_model()
        kind = "KD + CE" if with_teacher else "CE only"
        _say(f"[{role}] training {self.config.student.display_name}, {kind}, on {len(texts)} texts")
        dev = self.splits.dev
        result = train_student(self.config.student, self.config.train, texts, labels, logits,
                               self.out / f".train_{role}", dev=(dev.texts, dev.labels))  # every process (DDP)
        if is_main():
            save_student(result.model, result.tokenizer, self.out / folder)
            save_config(self.config, self.out / folder / "findistill_config.yaml")
            atomic_write_json(self.out / folder / "training_log.json", result.log_history)
            self._evaluate_model(result.model, result.tokenizer, role,
                                 f"{self.config.student.display_name} ({kind})",
                                 {"train_wall_time_s": round(result.wall_time_s, 1), "train_examples": len(texts),
                                  "train_steps": result.steps, "selected_step": result.selected_step,
                                  "selected_dev_metric": result.selected_dev_metric})
        self._finish(role)

    def release_teacher_model(self) -> None:
        """Free the teacher's weights once its logits are stored; a later stage that needs it loads it again."""
        if self._teacher is not None:
            self._teacher.release()
        self._teacher = None
        gc.collect()

    def stage_student_ce(self) -> None:
        self._train("student_ce", "student_ce", with_teacher=False)

    def stage_student_distilled(self) -> None:
        self._train("student_distilled", "student", with_teacher=True)

    def stage_report(self) -> dict | None:
        """results.json and report.md from the predictions in the folder (None when up to date, and on the other
        processes, which read the file once the main process wrote it)."""
        if not self._begin("report"):
            return None
        results = self._report() if is_main() else None
        self._finish("report")
        return results

    def _report(self) -> dict:
        from findistill.evaluation.metrics import evaluate_row, majority_row, paired_bootstrap, row_warnings, source_warnings
        from findistill.evaluation.report import build_results, write_results

        splits, ev_cfg = self.splits, self.config.eval
        y = np.asarray(splits.eval.labels)
        preds = {role: Prediction.load(self.prediction_path(role)) for role in
                 ("teacher", "student_baseline", "student_ce", "student_distilled")
                 if self.prediction_path(role).is_file()}
        teacher_logits = preds["teacher"].logits if "teacher" in preds else None
        rows = [majority_row(y, np.asarray(splits.train.labels), ev_cfg)]
        for role, p in preds.items():
            rows.append(evaluate_row(p.name, role, y, p.logits, ev_cfg,
                                     reference_logits=teacher_logits if role != "teacher" else None, **p.meta))
        warnings = row_warnings(rows)
        if sources := self.transfer_sources():
            warnings += source_warnings({k: v["teacher_labels"] for k, v in sources.items()})
        comparisons = []
        for a, b in (("student_distilled", "student_ce"), ("student_distilled", "teacher")):
            if a in preds and b in preds:
                for metric in ("accuracy", "macro_f1"):
                    comp = paired_bootstrap(y, preds[a].logits.argmax(1), preds[b].logits.argmax(1), metric,
                                            ev_cfg.bootstrap_samples, ev_cfg.confidence, ev_cfg.seed)
                    comparisons.append({"a": a, "b": b, **comp})
        extra = {"config": dataclasses.asdict(self.config), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "warnings": warnings}
        if check := self.teacher_check():
            extra["teacher_check"] = check
        if sources:
            extra["transfer_sources"] = sources
        if splits.holdout is not None and len(splits.holdout):
            from findistill.evaluation.metrics import fidelity

            students = {role: p.holdout_logits for role, p in preds.items()
                        if role in ("student_ce", "student_distilled") and p.holdout_logits is not None}
            extra["fidelity"] = fidelity(splits.holdout.sources, self.teacher_logits(splits.holdout),
                                         {role: (preds[role].name, logits) for role, logits in students.items()},
                                         ev_cfg)
        if fold_summaries := self.teacher_fold_summaries():
            extra["teacher_folds"] = fold_summaries
        summary = self.out / "augment" / "summary.json"
        if self.config.augment.enabled and summary.is_file():
            extra["augmentation"] = json.loads(summary.read_text())
        results = build_results(splits.info(), rows, comparisons, **extra)
        write_results(self.out, results, dump_config(self.config))
        return results

    def stage_analyze(self) -> None:
        if not self._begin("analyze"):
            return
        from findistill.pipeline.analyze import analyze_run

        if is_main():  # analysis/, report.html, calibration.json, model cards
            analyze_run(Run(self.config, self.out, self.data_dir))  # a fresh Run: nothing held in memory
        self._finish("analyze")


def cache_folder(config: RunConfig, out: Path, own: str) -> Path:
    """Where a run caches content-keyed files: ``cache.dir`` when set (shared by runs), else ``<run>/<own>``
    (``cache`` for teacher logits, ``augment`` for paraphrases)."""
    return Path(config.cache.dir) if config.cache.dir else Path(out) / own


def run(config: RunConfig, out_dir: str | Path, data_dir: str | None = None, stages: tuple[str, ...] = STAGES,
        shard: tuple[int, int] | None = None, dry_run: bool = False) -> dict | None:
    """Run the chosen stages in pipeline order, each only when its output is missing or stale; returns the results
    dict when the report stage is among ``stages``. ``dry_run``: print which stages would run and why, and run nothing.
    ``shard``: label only that shard's chunks (see :meth:`Run.stage_label`). Under ``accelerate launch`` every
    process calls this (see the module docstring); the results are returned on each."""
    out = Path(out_dir)
    rank_world()  # under accelerate launch: joins the other processes (and takes this process's GPU) first
    r = Run(config, out, data_dir)
    info = r.splits.info()  # data errors stop the run before anything is written
    if dry_run:
        rows = r.plan(stages)
        width = max(len(name) for name, _, _ in rows)
        if is_main():
            for name, action, why in rows:
                print(f"{name.ljust(width)}  {action:<4}  {why}")
        return None
    with contextlib.ExitStack() as held:
        if is_main():  # one command per folder; label shards (their own chunks only) may share it
            held.enter_context(folder_lock(out, shared=shard is not None))
        return _run_stages(r, info, stages, shard)


def _run_stages(r: Run, info: dict, stages: tuple[str, ...], shard: tuple[int, int] | None) -> dict | None:
    out, config = r.out, r.config
    r.stage_records()  # an older folder is adopted under its own config.yaml, before that file is replaced

    def start() -> None:
        out.mkdir(parents=True, exist_ok=True)
        r.write_stage_records()
        save_config(config, out / "config.yaml")
        atomic_write_json(out / "data.json", info)

    on_main(start)  # after every process has read the records
    steps: dict[str, Callable[[], object]] = {
        "teacher_finetune": r.stage_teacher_finetune,
        "teacher_check": r.stage_teacher_check,
        "teacher_eval": r.stage_teacher_eval,
        "label": lambda: r.stage_label(shard),
        "augment": r.stage_augment,
        "student_baseline": r.stage_student_baseline,
        "student_ce": r.stage_student_ce,
        "student_distilled": r.stage_student_distilled,
        "report": r.stage_report,
        "analyze": r.stage_analyze,
    }
    results = None
    for name in STAGES:
        if name not in stages:
            continue
        started = time.perf_counter()
        output = steps[name]()
        if name == "report":
            from findistill.evaluation.report import load_results

            results = output if output is not None else load_results(out)  # up to date, or written by the main
        log.info("[%s] done in %.1f s", name, time.perf_counter() - started)
    return results
