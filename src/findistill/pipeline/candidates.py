"""`findistill candidates CONFIG`: the candidate tables of the reference study, on the dev split.

* Teachers (``candidates.teachers``: prompted LMs, classifiers, ensembles): dev accuracy and macro-F1 with
  bootstrap CIs, parameters, peak memory of loading + labelling the dev texts, examples/s.
* Students (``candidates.students``): dev accuracy / macro-F1 of the untrained head, then after CE-only training
  at the run's ``train`` budget on ``candidates.max_train_examples`` texts (wall time, examples/s).

Writes ``<out>/candidates.json`` and ``<out>/candidates.md`` with both tables and a recommendation per table.
Both tables start with the majority-class row (the most frequent training label predicted for every dev text),
and no candidate is recommended unless it beats that row on dev accuracy AND dev macro-F1; when none does, the
recommendation is "none" and says so:

* teacher: the highest dev macro-F1 among the candidates whose peak memory fits the budget
  (``--memory-budget-gb``; default 80 % of the GPU's memory on CUDA, of the machine's RAM on CPU);
* student: the highest CE-only dev accuracy; among candidates within one point of it, the one with the fewest
  parameters.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each candidate); on CPU the peak of the
process RSS above its level before the candidate, sampled every 20 ms with psutil (``resource.getrusage``'s
high-water mark, a lower bound, when psutil is missing). The method is written next to the numbers.
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from findistill.config import EvalConfig, RunConfig, StudentConfig, TeacherConfig
from findistill.data.splits import TextSplit, load_splits, stratified_subsample
from findistill.errors import FindistillError, first_line
from findistill.io import atomic_write_json, atomic_write_text

__all__ = ["compare_candidates", "MemoryMeter", "recommend_teacher", "recommend_student", "beats_majority",
           "majority_dev_row"]

STUDENT_TOLERANCE = 0.01  # accuracy points within which the smaller student is preferred


class MemoryMeter:
    """Peak memory (MB) of the code run inside ``with meter:``; ``method`` says how it was measured."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.cuda = torch.cuda.is_available()
        try:
            import psutil

            self._process = psutil.Process()
        except ImportError:  # pragma: no cover - psutil is installed with the dev extras
            self._process = None
        if self.cuda:
            self.method = "torch.cuda.max_memory_allocated (GPU, per candidate)"
        elif self._process is not None:
            self.method = ("peak process RSS above the level before the candidate (psutil, sampled every 20 ms; "
                           "freed heap returned to the OS first with malloc_trim where glibc has it)")
        else:  # pragma: no cover
            self.method = "resource.getrusage ru_maxrss delta (a lower bound once an earlier candidate peaked higher)"
        self.peak_mb: float = 0.0

    def _rss(self) -> int:
        if self._process is not None:
            return int(self._process.memory_info().rss)
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if platform.system() == "Darwin" else 1024)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> "MemoryMeter":
        gc.collect()
        _malloc_trim()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = max(0, self._peak - self._base) / 2**20


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so memory freed by an earlier candidate is not reused unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def default_memory_budget_mb() -> float:
    """80 % of the GPU's memory (CUDA) or of the machine's RAM."""
    if torch.cuda.is_available():
        return 0.8 * torch.cuda.get_device_properties(0).total_memory / 2**20
    try:
        import psutil

        return 0.8 * psutil.virtual_memory().total / 2**20
    except ImportError:  # pragma: no cover
        return 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def _row(name: str, role: str, labels: list[int], logits: np.ndarray, eval_cfg: EvalConfig) -> dict[str, Any]:
    from findistill.evaluation.metrics import evaluate_row

    row = evaluate_row(name, role, labels, logits, eval_cfg)
    return {k: row[k] for k in ("name", "n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confidence")}


def majority_dev_row(dev: TextSplit, train: TextSplit, eval_cfg: EvalConfig) -> dict[str, Any]:
    """The majority-class baseline on ``dev``: the most frequent label of ``train`` predicted for every dev text."""
    from findistill.evaluation.metrics import majority_row

    row = majority_row(dev.labels, train.labels, eval_cfg)
    return {k: row[k] for k in ("name", "n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confidence")}


def teacher_row(cfg: TeacherConfig, dev: TextSplit, train: TextSplit, eval_cfg: EvalConfig, seed: int) -> dict:
    """One teacher candidate on ``dev``: metrics with CIs, params, peak memory (MB), examples/s."""
    from findistill.teachers import build_teacher

    meter = MemoryMeter()
    with meter:
        start = time.perf_counter()
        teacher = build_teacher(cfg, train.texts, train.labels, seed=seed)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        logits = teacher.class_logits(dev.texts)
        seconds = time.perf_counter() - start
        params = int(teacher.num_parameters)
        teacher.release()
        del teacher
    row = _row(cfg.display_name, "teacher", dev.labels, logits, eval_cfg)
    row.update(kind=cfg.kind, model=cfg.model, few_shot=cfg.few_shot if cfg.kind == "prompted_lm" else None,
               params=params, peak_memory_mb=round(meter.peak_mb, 1), load_s=round(load_s, 1),
               examples_per_s=round(len(dev) / max(seconds, 1e-9), 2))
    return row


def student_row(cfg: StudentConfig, config: RunConfig, train: TextSplit, dev: TextSplit, scratch: Path) -> dict:
    """One student candidate: untrained-head and CE-only dev metrics, params, training wall time, examples/s."""
    from findistill.evaluation.metrics import predict_logits
    from findistill.models.student import build_student, count_parameters
    from findistill.training.trainer import train_student

    eval_bs = config.train.eval_batch_size
    model, tokenizer = build_student(cfg)
    baseline = predict_logits(model, tokenizer, dev.texts, eval_bs, cfg.max_length, desc="baseline")
    del model
    result = train_student(cfg, config.train, train.texts, train.labels, None, scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    start = time.perf_counter()
    logits = predict_logits(result.model, result.tokenizer, dev.texts, eval_bs, cfg.max_length, desc="CE-only")
    seconds = time.perf_counter() - start
    total, trainable = count_parameters(result.model)
    base = _row(cfg.display_name, "student_baseline", dev.labels, baseline, config.eval)
    row = _row(cfg.display_name, "student_ce", dev.labels, logits, config.eval)
    row.update(model=cfg.model, method=cfg.method, params=total, trainable_params=trainable,
               baseline_accuracy=base["accuracy"], baseline_macro_f1=base["macro_f1"],
               train_examples=len(train), train_wall_time_s=round(result.wall_time_s, 1),
               examples_per_s=round(len(dev) / max(seconds, 1e-9), 2))
    del result
    gc.collect()
    return row


def beats_majority(row: dict, majority: dict | None) -> bool:
    """True when ``row`` is above the majority-class row on dev accuracy and on dev macro-F1 (or no majority row)."""
    return majority is None or (row["accuracy"] > majority["accuracy"] and row["macro_f1"] > majority["macro_f1"])


def _majority_rule(majority: dict | None) -> str:
    return "" if majority is None else ", and only candidates above the majority class on dev accuracy and macro-F1"


def _none_beats(what: str, ran: list[dict], majority: dict) -> dict:
    best = max(ran, key=lambda r: (r["accuracy"], r["macro_f1"]))
    return {"name": None, "beats_majority": False,
            "reason": f"no {what} candidate beats the majority class ({majority['name']}: dev accuracy "
                      f"{majority['accuracy']:.3f}, macro-F1 {majority['macro_f1']:.3f}); the best, {best['name']}, "
                      f"has accuracy {best['accuracy']:.3f}, macro-F1 {best['macro_f1']:.3f}, so none is recommended"}


def recommend_teacher(rows: list[dict], budget_mb: float, majority: dict | None = None) -> dict:
    """The teacher to use, or ``name: None`` with the reason; ``majority`` is the dev majority-class row."""
    rule = f"highest dev macro-F1 among the teachers whose peak memory is <= {budget_mb:,.0f} MB" + _majority_rule(
        majority)
    ran = [r for r in rows if "error" not in r]
    fits = [r for r in ran if r["peak_memory_mb"] <= budget_mb]
    if not fits:
        return {"name": None, "rule": rule, "reason": "no teacher candidate ran within the memory budget"}
    ok = [r for r in fits if beats_majority(r, majority)]
    if not ok:
        return {"rule": rule, **_none_beats("teacher", fits, majority)}
    best = max(ok, key=lambda r: (r["macro_f1"], r["accuracy"]))
    return {"name": best["name"], "rule": rule,
            "reason": f"dev macro-F1 {best['macro_f1']:.3f} (accuracy {best['accuracy']:.3f}) at "
                      f"{best['peak_memory_mb']:,.0f} MB peak and {best['examples_per_s']:,.1f} examples/s"}


def recommend_student(rows: list[dict], majority: dict | None = None) -> dict:
    """The student to use, or ``name: None`` with the reason; ``majority`` is the dev majority-class row."""
    ran = [r for r in rows if "error" not in r]
    rule = (f"highest CE-only dev accuracy; among students within {STUDENT_TOLERANCE * 100:.0f} point of it, "
            "the one with the fewest parameters" + _majority_rule(majority))
    if not ran:
        return {"name": None, "rule": rule, "reason": "no student candidate ran"}
    ok = [r for r in ran if beats_majority(r, majority)]
    if not ok:
        return {"rule": rule, **_none_beats("student", ran, majority)}
    top = max(r["accuracy"] for r in ok)
    near = [r for r in ok if r["accuracy"] >= top - STUDENT_TOLERANCE]
    best = min(near, key=lambda r: (r["params"], -r["accuracy"]))
    return {"name": best["name"], "rule": rule,
            "reason": f"CE-only dev accuracy {best['accuracy']:.3f} (best {top:.3f}) with "
                      f"{best['params']:,} parameters"}


def _guarded(name: str, fn: Callable[[], dict]) -> dict:
    """A candidate that cannot be loaded or run becomes a row with its one-line error (the others still run)."""
    try:
        return fn()
    except (FindistillError, OSError, RuntimeError, ValueError) as err:
        return {"name": name, "error": first_line(err)}


def compare_candidates(config: RunConfig, out: Path, data_dir: str | None = None,
                       memory_budget_mb: float | None = None) -> dict:
    """Run every candidate, write ``candidates.json`` / ``candidates.md`` into ``out``, return the document."""
    cand = config.candidates
    if not cand.teachers and not cand.students:
        from findistill.config import ConfigError

        raise ConfigError("candidates", "lists no teachers and no students")
    splits = load_splits(config.data, data_dir)
    seed = config.data.seed
    dev = stratified_subsample(splits.dev, cand.max_dev_examples, seed)
    train = stratified_subsample(splits.train, cand.max_train_examples, seed)
    budget = memory_budget_mb if memory_budget_mb is not None else default_memory_budget_mb()
    majority = majority_dev_row(dev, train, config.eval)
    teachers = [_guarded(t.display_name, lambda t=t: teacher_row(t, dev, train, config.eval, seed))
                for t in cand.teachers]
    students = [_guarded(s.display_name, lambda s=s: student_row(s, config, train, dev, out / ".train_candidate"))
                for s in cand.students]
    doc = {
        "dataset": {"name": splits.name, "split": "dev", "n_dev": len(dev), "n_train": len(train),
                    "label_counts_dev": dev.label_counts()},
        "memory_method": MemoryMeter().method, "memory_budget_mb": round(budget, 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "train_budget": {"epochs": config.train.epochs, "learning_rate": config.train.learning_rate,
                         "batch_size": config.train.batch_size, "max_steps": config.train.max_steps},
        "majority": majority, "teachers": teachers, "students": students,
        "recommendation": {"teacher": recommend_teacher(teachers, budget, majority) if teachers else None,
                           "student": recommend_student(students, majority) if students else None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(out / "candidates.json", doc)
    atomic_write_text(out / "candidates.md", render_markdown(doc))
    return doc


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def render_markdown(doc: dict) -> str:
    d = doc["dataset"]
    maj = doc.get("majority")
    level = f"{maj['confidence'] * 100:g}% CI" if maj and maj.get("confidence") else "CI"
    lines = ["# Candidates", "", f"Dev split of `{d['name']}`: n = {d['n_dev']:,}; students train on "
             f"{d['n_train']:,} texts. Created {doc['created']}.", ""]
    if doc["teachers"]:
        lines += ["## Teachers", "", f"Peak memory: {doc['memory_method']}.", "",
                  f"| teacher | kind | params | dev accuracy [{level}] | dev macro-F1 [{level}] | peak memory (MB) "
                  "| examples/s |", "|---|---|---:|---:|---:|---:|---:|"]
        if maj:
            lines.append(f"| {maj['name']} | majority (the bar) | 0 | {_ci(maj['accuracy'], maj['accuracy_ci'])} | "
                         f"{_ci(maj['macro_f1'], maj['macro_f1_ci'])} | — | — |")
        for r in doc["teachers"]:
            if "error" in r:
                lines.append(f"| {r['name']} | — | — | error: {r['error']} | — | — | — |")
                continue
            kind = r["kind"] + (f", {r['few_shot']}-shot" if r.get("few_shot") else "")
            lines.append(f"| {r['name']} | {kind} | {r['params']:,} | {_ci(r['accuracy'], r['accuracy_ci'])} | "
                         f"{_ci(r['macro_f1'], r['macro_f1_ci'])} | {r['peak_memory_mb']:,.0f} | "
                         f"{r['examples_per_s']:,.1f} |")
        lines += ["", _recommendation("teacher", doc["recommendation"]["teacher"]), ""]
    if doc["students"]:
        b = doc["train_budget"]
        lines += ["## Students", "", f"CE-only training: {b['epochs']} epochs, lr {b['learning_rate']}, batch "
                  f"{b['batch_size']}.", "",
                  f"| student | method | params (trainable) | untrained acc / macro-F1 | CE-only dev accuracy [{level}] "
                  f"| CE-only dev macro-F1 [{level}] | train time (s) | examples/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        if maj:
            lines.append(f"| {maj['name']} | majority (the bar) | 0 | — | {_ci(maj['accuracy'], maj['accuracy_ci'])} | "
                         f"{_ci(maj['macro_f1'], maj['macro_f1_ci'])} | — | — |")
        for r in doc["students"]:
            if "error" in r:
                lines.append(f"| {r['name']} | — | — | — | error: {r['error']} | — | — | — |")
                continue
            lines.append(f"| {r['name']} | {r['method']} | {r['params']:,} ({r['trainable_params']:,}) | "
                         f"{r['baseline_accuracy']:.3f} / {r['baseline_macro_f1']:.3f} | "
                         f"{_ci(r['accuracy'], r['accuracy_ci'])} | {_ci(r['macro_f1'], r['macro_f1_ci'])} | "
                         f"{r['train_wall_time_s']:,.1f} | {r['examples_per_s']:,.1f} |")
        lines += ["", _recommendation("student", doc["recommendation"]["student"]), ""]
    return "\n".join(lines)


def _recommendation(what: str, rec: dict | None) -> str:
    if not rec:
        return f"**Recommended {what}:** none (no candidates)."
    if rec["name"] is None:
        return f"**Recommended {what}:** none ({rec['reason']}). Rule: {rec['rule']}."
    return f"**Recommended {what}: {rec['name']}** — {rec['reason']}. Rule: {rec['rule']}."
