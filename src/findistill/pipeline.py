"""The stages of `findistill run`: data → teacher → labels → students → evaluation → report.

Every stage writes its output into the run folder and is skipped when that output already exists, so a rerun
resumes where the last one stopped. Run folder layout::

    <run>/config.yaml                 the resolved config
    <run>/data.json                   dataset info: sizes, label counts, cross-split duplicates
    <run>/teacher/                    the fine-tuned teacher (merged), when teacher.finetune.enabled
    <run>/teacher_folds/fold_<k>/     cross-fitted teachers (teacher.finetune.cross_fit_folds), each blind to fold k
    <run>/teacher_logits/             the teacher's logits per split (out-of-fold for train when cross-fitted)
    <run>/cache/                      teacher class logits, keyed by texts + teacher fingerprint
    <run>/augment/                    paraphrase candidates (resumable JSONL) and the filter's counts
    <run>/predictions/<role>.npz      [N, 3] logits of each model on the evaluation split + its metadata
    <run>/student_ce/                 the CE-only student (plain Hugging Face folder)
    <run>/student/                    the distilled student, LoRA merged (plain Hugging Face folder)
    <run>/student*/training_log.json  the Trainer's log: loss, kd_loss, ce_loss per logging step, dev scores
    <run>/results.json, report.md     the results contract
    <run>/analysis/, report.html      slices, entity swap, probes, calibration (findistill.analysis)
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from findistill.config import ConfigError, RunConfig, dump_config, save_config
from findistill.data import DatasetSplits, TextSplit, load_splits
from findistill.io_utils import atomic_write_json

log = logging.getLogger("findistill.pipeline")

STAGES = ("teacher_finetune", "teacher_eval", "label", "augment", "student_baseline", "student_ce",
          "student_distilled", "report", "analyze")


def _say(message: str) -> None:
    """Stage banners go to stderr-visible logging so long runs show where they are."""
    log.info(message)


@dataclass
class Prediction:
    """Logits of one model on the evaluation split, plus what the results table needs about it."""

    name: str
    role: str
    logits: np.ndarray  # [N, 3] float32, canonical class order
    meta: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, logits=self.logits, meta=json.dumps({"name": self.name, "role": self.role, **self.meta}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Prediction":
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(meta.pop("name"), meta.pop("role"), data["logits"], meta)


class Run:
    """One run folder and the stages that fill it; models are loaded only when a stage needs them."""

    def __init__(self, config: RunConfig, out_dir: Path, data_dir: str | None = None):
        self.config = config
        self.out = Path(out_dir)
        self.data_dir = data_dir
        self._splits: DatasetSplits | None = None
        self._teacher = None
        self.teacher_seconds: dict[str, float] = {}  # split -> seconds of teacher inference (model load excluded)

    # ------------------------------------------------------------------ shared pieces
    @property
    def splits(self) -> DatasetSplits:
        if self._splits is None:
            _say("[data] loading splits")
            self._splits = load_splits(self.config.data, self.data_dir)
        return self._splits

    def prediction_path(self, role: str) -> Path:
        return self.out / "predictions" / f"{role}.npz"

    def teacher_config(self, tuned: Path | None = None):
        """The teacher as configured, or pointing at a fine-tuned teacher folder (default ``<run>/teacher``)."""
        cfg = self.config.teacher
        tuned = tuned or self.out / "teacher"
        if cfg.finetune.enabled:
            # method "head" saves a sequence classifier (canonical id2label); "verbalizer" a causal LM.
            # The tuned teacher is read with the prompt it was tuned with: no demonstrations (few_shot 0), which
            # its fingerprint records.
            kind = "classifier" if cfg.finetune.method == "head" else cfg.kind
            cfg = dataclasses.replace(cfg, kind=kind, model=str(tuned), revision=None, label_map={}, few_shot=0,
                                      name=f"{cfg.display_name} (fine-tuned)")
        return cfg

    @property
    def teacher(self):
        """The (cached) teacher. Loading it costs time and memory, so it happens on first use only."""
        if self._teacher is None:
            from findistill.cache import CachedTeacher
            from findistill.teacher import build_teacher

            cfg = self.teacher_config()
            _say(f"[teacher] loading {cfg.display_name}")
            train = self.splits.train
            teacher = build_teacher(cfg, train.texts, train.labels, seed=self.config.data.seed)
            self._teacher = CachedTeacher(teacher, self.out / "cache")
        return self._teacher

    def teacher_logits(self, split: TextSplit, teacher=None, key_extra: dict | None = None) -> np.ndarray:
        """The teacher's ``[N, 3]`` logits for a split, kept in ``<run>/teacher_logits/``.

        Once a split is labelled, a resumed run reads this file and never loads the teacher (a 7B teacher
        takes minutes to load even when every logit is cached). ``teacher`` (default: the run's teacher) and
        ``key_extra`` serve the cross-fitted fold teachers.
        """
        from findistill.cache import cache_key, load_cached, save_cached, texts_hash

        folder, digest = self.out / "teacher_logits", texts_hash(split.texts)
        key = cache_key({"run_split": split.name, **(key_extra or {})}, split.texts)
        logits = load_cached(folder, key, n=len(split), texts_sha256=digest)
        if logits is None:
            teacher = teacher or self.teacher  # loaded before the clock starts
            start = time.perf_counter()
            logits = teacher.class_logits(split.texts)
            self.teacher_seconds[split.name] = time.perf_counter() - start
            save_cached(folder, key, logits, {"split": split.name, "n": len(split), "texts_sha256": digest,
                                              "teacher": teacher.name, **(key_extra or {})})
        return logits

    # ------------------------------------------------------------------ cross-fitting
    def fold_dir(self, k: int) -> Path:
        return self.out / "teacher_folds" / f"fold_{k}"

    def folds(self) -> list[list[int]]:
        """Training-row indices of each cross-fitting fold (stratified, seeded by ``data.seed``)."""
        from findistill.data import stratified_folds

        return stratified_folds(self.splits.train.labels, self.config.teacher.finetune.cross_fit_folds,
                                self.config.data.seed)

    def train_teacher_logits(self) -> np.ndarray:
        """Soft labels of the training rows: out-of-fold when cross-fitting is on, else the teacher's own.

        Out-of-fold: row i gets the logits of the fold teacher that did not see row i in its fine-tune.
        """
        train, k_folds = self.splits.train, self.config.teacher.finetune.cross_fit_folds
        if not (self.config.teacher.finetune.enabled and k_folds):
            return self.teacher_logits(train)
        from findistill.cache import CachedTeacher
        from findistill.teacher import build_teacher

        out = np.full((len(train), 3), np.nan, dtype=np.float32)
        for k, rows in enumerate(self.folds()):
            held_out = train.subset(rows)
            held_out.name = f"train_fold_{k}"
            key = {"cross_fit_folds": k_folds, "fold": k}
            teacher = None
            if not self._fold_logits_cached(held_out, key):
                _say(f"[label] fold teacher {k} labels its {len(rows)} held-out training texts")
                seen = train.subset(sorted(set(range(len(train))) - set(rows)))  # its few-shot pool, if any
                teacher = CachedTeacher(build_teacher(self.teacher_config(self.fold_dir(k)), seen.texts, seen.labels,
                                                      seed=self.config.data.seed), self.out / "cache")
            out[rows] = self.teacher_logits(held_out, teacher=teacher, key_extra=key)
            if teacher is not None:
                teacher.release()
        return out

    def _fold_logits_cached(self, split: TextSplit, key_extra: dict) -> bool:
        from findistill.cache import cache_key, load_cached, texts_hash

        key = cache_key({"run_split": split.name, **key_extra}, split.texts)
        return load_cached(self.out / "teacher_logits", key, n=len(split), texts_sha256=texts_hash(split.texts)) \
            is not None

    # ------------------------------------------------------------------ stages
    def stage_teacher_finetune(self) -> None:
        ft = self.config.teacher.finetune
        if not ft.enabled:
            return
        from findistill.teacher_finetune import finetune_teacher

        target = self.out / "teacher"
        if (target / "config.json").is_file():
            _say(f"[teacher_finetune] reusing {target}")
        else:
            _say(f"[teacher_finetune] fine-tuning the teacher on gold labels ({ft.parameters}; dev split for "
                 "selection)")
            finetune_teacher(self.config.teacher, self.splits.train, self.splits.dev, target,
                             seed=self.config.data.seed)
        if not ft.cross_fit_folds:
            return
        train = self.splits.train
        for k, rows in enumerate(self.folds()):
            if (self.fold_dir(k) / "config.json").is_file():
                continue
            held_out = set(rows)
            _say(f"[teacher_finetune] cross-fitting: fold teacher {k + 1}/{ft.cross_fit_folds}, blind to "
                 f"{len(rows)} training texts")
            finetune_teacher(self.config.teacher, train.subset([i for i in range(len(train)) if i not in held_out]),
                             self.splits.dev, self.fold_dir(k), seed=self.config.data.seed)

    def stage_teacher_eval(self) -> None:
        if not self.config.evaluate_teacher or self.prediction_path("teacher").is_file():
            return
        ev = self.splits.eval
        _say(f"[teacher_eval] teacher on {ev.name} ({len(ev)} texts)")
        logits = self.teacher_logits(ev)
        teacher = self.teacher
        seconds = self.teacher_seconds.get(ev.name)
        Prediction(teacher.name, "teacher", logits, {
            "params": teacher.num_parameters, "trainable_params": 0,
            # Inference only (model load excluded); a cache hit measures nothing about the model's speed.
            "examples_per_s": round(len(ev) / seconds, 2) if seconds and teacher.misses else None,
        }).save(self.prediction_path("teacher"))

    def stage_label(self) -> None:
        """Teacher logits for every training text (and transfer texts), written once to the cache."""
        splits = self.splits
        _say(f"[label] teacher logits for {len(splits.train)} training texts")
        self.train_teacher_logits()
        if splits.transfer is not None and len(splits.transfer):
            _say(f"[label] teacher logits for {len(splits.transfer)} transfer texts")
            self.teacher_logits(splits.transfer)
        self.release_teacher_model()  # the students train without the teacher in memory

    def stage_augment(self) -> dict | None:
        cfg = self.config.augment
        if not cfg.enabled:
            return None
        from findistill.augment import augment, load_generator

        splits = self.splits
        summary_path = self.out / "augment" / "summary.json"
        others = splits.train.texts + splits.dev.texts + splits.eval.texts
        generator = cfg.model or self.teacher_config().model
        model, tokenizer = load_generator(generator, backend=self.config.teacher.backend)
        _say(f"[augment] paraphrasing training texts with {generator}; the teacher filters and labels them")
        result = augment(cfg, splits.train, others, model, tokenizer, self.teacher, self.out / "augment")
        del model
        gc.collect()
        self.augmented = result
        atomic_write_json(summary_path, result.summary)
        return result.summary

    def _training_set(self, with_teacher: bool) -> tuple[list[str], list[int], np.ndarray | None]:
        """Gold training texts (+ kept paraphrases, + transfer texts for KD), with teacher logits when needed."""
        splits = self.splits
        texts, labels = list(splits.train.texts), list(splits.train.labels)
        logits = [self.train_teacher_logits()] if with_teacher else []
        aug = getattr(self, "augmented", None)
        if aug is not None and len(aug.texts):
            texts += aug.texts
            labels += aug.labels
            if with_teacher:
                logits.append(aug.teacher_logits if aug.teacher_logits is not None
                              else self.teacher.class_logits(aug.texts))
        if with_teacher and splits.transfer is not None and len(splits.transfer):
            texts += splits.transfer.texts
            labels += [-1] * len(splits.transfer)  # no gold label: KD loss only
            logits.append(self.teacher_logits(splits.transfer))
        return texts, labels, (np.concatenate(logits).astype(np.float32) if with_teacher else None)

    def _evaluate_model(self, model, tokenizer, role: str, name: str, meta: dict) -> None:
        from findistill.evaluate import predict_logits
        from findistill.student import count_parameters

        ev = self.splits.eval
        start = time.perf_counter()
        logits = predict_logits(model, tokenizer, ev.texts, batch_size=self.config.train.eval_batch_size,
                                max_length=self.config.student.max_length, desc=f"eval {role}")
        seconds = time.perf_counter() - start
        total, trainable = count_parameters(model)
        Prediction(name, role, logits, {"params": total, "trainable_params": trainable,
                                        "examples_per_s": round(len(ev) / seconds, 2), **meta}
                   ).save(self.prediction_path(role))

    def stage_student_baseline(self) -> None:
        if self.prediction_path("student_baseline").is_file():
            return
        from transformers import set_seed

        from findistill.student import build_student

        _say("[student_baseline] the student before any training on the task")
        set_seed(self.config.train.seed)  # the untrained head's initialisation, the same one training starts from
        model, tokenizer = build_student(self.config.student)
        self._evaluate_model(model, tokenizer, "student_baseline",
                             f"{self.config.student.display_name} (untrained head)", {})

    def _train(self, role: str, folder: str, with_teacher: bool) -> None:
        if self.prediction_path(role).is_file() and (self.out / folder / "config.json").is_file():
            return
        from findistill.student import save_student
        from findistill.trainer import train_student

        texts, labels, logits = self._training_set(with_teacher)
        if with_teacher:
            self.release_teacher_model()
        kind = "KD + CE" if with_teacher else "CE only"
        _say(f"[{role}] training {self.config.student.display_name}, {kind}, on {len(texts)} texts")
        dev = self.splits.dev
        result = train_student(self.config.student, self.config.train, texts, labels, logits,
                               self.out / f".train_{role}", dev=(dev.texts, dev.labels))
        save_student(result.model, result.tokenizer, self.out / folder)
        save_config(self.config, self.out / folder / "findistill_config.yaml")
        atomic_write_json(self.out / folder / "training_log.json", result.log_history)
        self._evaluate_model(result.model, result.tokenizer, role,
                             f"{self.config.student.display_name} ({kind})",
                             {"train_wall_time_s": round(result.wall_time_s, 1), "train_examples": len(texts),
                              "train_steps": result.steps, "selected_step": result.selected_step,
                              "selected_dev_metric": result.selected_dev_metric})

    def release_teacher_model(self) -> None:
        """Free the teacher's weights once its logits are stored; a later stage that needs it loads it again."""
        if self._teacher is not None and hasattr(self._teacher, "release"):
            self._teacher.release()
        self._teacher = None
        gc.collect()

    def stage_student_ce(self) -> None:
        if self.config.train_ce_student:
            self._train("student_ce", "student_ce", with_teacher=False)

    def stage_student_distilled(self) -> None:
        self._train("student_distilled", "student", with_teacher=True)

    def stage_report(self, augmentation: dict | None = None) -> dict:
        from findistill.evaluate import evaluate_row, majority_row, paired_bootstrap
        from findistill.report import build_results, render_table, write_results

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
        comparisons = []
        for a, b in (("student_distilled", "student_ce"), ("student_distilled", "teacher")):
            if a in preds and b in preds:
                for metric in ("accuracy", "macro_f1"):
                    comp = paired_bootstrap(y, preds[a].logits.argmax(1), preds[b].logits.argmax(1), metric,
                                            ev_cfg.bootstrap_samples, ev_cfg.confidence, ev_cfg.seed)
                    comparisons.append({"a": a, "b": b, **comp})
        if augmentation is None and (self.out / "augment" / "summary.json").is_file():
            augmentation = json.loads((self.out / "augment" / "summary.json").read_text())
        extra = {"config": dataclasses.asdict(self.config), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        fold_summaries = sorted((self.out / "teacher_folds").glob("fold_*/finetune_summary.json"))
        if fold_summaries:  # each cross-fitted teacher's dev score (selection split; evaluation unused)
            extra["teacher_folds"] = [{"fold": p.parent.name, **{k: json.loads(p.read_text())[k] for k in (
                "train_examples", "best_epoch", "best")}} for p in fold_summaries]
        if augmentation is not None:
            extra["augmentation"] = augmentation
        results = build_results(splits.info(), rows, comparisons, **extra)
        write_results(self.out, results, dump_config(self.config))
        print(render_table(rows))
        return results


def run(config: RunConfig, out_dir: str | Path, data_dir: str | None = None,
        stages: tuple[str, ...] = STAGES) -> dict | None:
    """Run the chosen stages in pipeline order; returns the results dict when the report stage ran."""
    out = Path(out_dir)
    saved = out / "config.yaml"
    if saved.is_file() and saved.read_text() != dump_config(config):
        # Finished stages are skipped by their outputs, so resuming under another config would mix two runs.
        raise ConfigError("", f"{out} holds a run of a different config ({saved}); use another --out or delete it")
    r = Run(config, out, data_dir)
    info = r.splits.info()  # data errors stop the run before anything is written
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, saved)
    atomic_write_json(out / "data.json", info)
    steps: dict[str, Callable[[], object]] = {
        "teacher_finetune": r.stage_teacher_finetune,
        "teacher_eval": r.stage_teacher_eval,
        "label": r.stage_label,
        "augment": r.stage_augment,
        "student_baseline": r.stage_student_baseline,
        "student_ce": r.stage_student_ce,
        "student_distilled": r.stage_student_distilled,
    }
    augmentation = None
    for name in STAGES:
        if name not in stages or name in ("report", "analyze"):
            continue
        started = time.perf_counter()
        output = steps[name]()
        if name == "augment":
            augmentation = output
        log.info("[%s] done in %.1f s", name, time.perf_counter() - started)
    results = None
    if "report" in stages:
        results = r.stage_report(augmentation)
        print(f"\nreport: {out / 'report.md'}")
    if "analyze" in stages:
        from findistill.analysis import analyze_run

        started = time.perf_counter()
        analyze_run(config, out, data_dir)  # analysis/, report.html, the students' calibration.json, model cards
        log.info("[analyze] done in %.1f s", time.perf_counter() - started)
    return results
