"""Evaluation: batched inference, classification metrics, bootstrap confidence intervals, paired bootstrap with
the exact McNemar test.

Everything works on class ids in the canonical order of :data:`findistill.config.LABELS` and on logit
matrices ``[N, C]`` in that order. Results rows (plain JSON-able dicts) are built by :func:`evaluate_row` and
:func:`majority_row`; :mod:`findistill.evaluation.report` validates and renders them.

Macro-F1 follows scikit-learn's ``f1_score(average="macro", zero_division=0)``: the mean per-class F1 over the
classes that occur in ``y_true`` or ``y_pred`` (a class absent from both is left out of the mean). The bootstrap
computes it from per-resample confusion counts (one ``bincount`` for all resamples), so 1,000 resamples of a few
thousand rows take milliseconds.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from findistill.config import LABELS, EvalConfig
from findistill.models.inference import predict_texts, softmax

Metric = Literal["accuracy", "macro_f1"]
METRICS: tuple[str, ...] = ("accuracy", "macro_f1")
# Resample-matrix elements processed per chunk (bounds memory for large evaluation sets).
_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------- inference


def predict_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    device: Any = None,
    desc: str | None = None,
) -> np.ndarray:
    """Class logits ``[N, C]`` (float32, in the order of ``texts``) of a sequence-classification model.

    Texts run in length-sorted batches (:func:`findistill.inference.predict_texts`), the input order restored.
    Padding follows ``tokenizer.padding_side`` (left or right), so encoders and decoder-only classifiers both
    work; the model's ``config.pad_token_id`` must be set for decoder-only models (``student.build_student``
    does this). ``device=None`` uses the model's own device; otherwise the model is moved there. The model runs
    in eval mode under ``torch.inference_mode``; its previous train/eval mode is restored afterwards.
    """
    import torch

    num_labels = int(getattr(getattr(model, "config", None), "num_labels", len(LABELS)))
    if device is None:
        device = next(model.parameters()).device
    else:
        model.to(device)

    def forward(batch: Any) -> np.ndarray:
        result = model(**{k: v.to(device) for k, v in batch.items()})
        logits = result.logits if hasattr(result, "logits") else result[0]
        return logits.float().cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return predict_texts(tokenizer, texts, max_length, batch_size, num_labels, forward, return_tensors="pt",
                                 progress=None, desc=desc)
    finally:
        model.train(was_training)


def predictions(logits: np.ndarray) -> np.ndarray:
    """Predicted class ids (argmax over the last axis)."""
    return np.asarray(logits).argmax(axis=-1).astype(np.int64)


# --------------------------------------------------------------------------------------------- metrics


def _as_ids(y: Any, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{what} must hold integer class ids")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{what} must hold class ids in [0, {num_classes - 1}], got {arr.min()}..{arr.max()}")
    return arr


def _pair(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = _as_ids(y_true, num_classes, "y_true")
    p = _as_ids(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("cannot evaluate zero examples")
    return t, p


def classification_metrics(y_true: Any, y_pred: Any, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """accuracy, macro_f1, per_class {name: {precision, recall, f1, support}} and the confusion matrix.

    ``confusion_matrix[i][j]`` counts examples of true class ``i`` predicted as ``j`` (canonical order).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    t, p = _pair(y_true, y_pred, len(labels))
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(t, p)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(t, p, labels=ids).astype(int).tolist(),
    }


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion matrices ``[..., C, C]`` (rows true, cols predicted), sklearn semantics.

    Per class ``F1 = 2 TP / (2 TP + FP + FN)``; classes with no true and no predicted example are left out of
    the mean (0 when no class is present at all).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)  # 2TP + FP + FN
    present = denom > 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=present)
    count = present.sum(axis=-1)
    return np.divide(f1.sum(axis=-1), count, out=np.zeros(f1.shape[:-1]), where=count > 0)


def _metric_full(metric: str, t: np.ndarray, p: np.ndarray, num_classes: int) -> float:
    if metric == "accuracy":
        return float(np.mean(t == p))
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return float(macro_f1_from_confusion(cm))


def _resampled(metric: str, t: np.ndarray, p: np.ndarray, idx: np.ndarray, num_classes: int) -> np.ndarray:
    """The metric on each resample; ``idx`` is ``[B, n]`` row indices."""
    if metric == "accuracy":
        return (t == p)[idx].mean(axis=1)
    cc = num_classes * num_classes
    codes = (t * num_classes + p)[idx] + (np.arange(idx.shape[0]) * cc)[:, None]
    cm = np.bincount(codes.ravel(), minlength=idx.shape[0] * cc).reshape(idx.shape[0], num_classes, num_classes)
    return macro_f1_from_confusion(cm)


def _check_metric(metric: str, n_samples: int, confidence: float) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _index_chunks(n: int, n_samples: int, seed: int):
    """Yield ``[b, n]`` bootstrap index matrices totalling ``n_samples`` rows, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_samples:
        b = min(per_chunk, n_samples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _percentile_ci(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    y_true: Any,
    y_pred: Any,
    metric: Metric = "accuracy",
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    num_classes: int = len(LABELS),
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of ``metric`` (rows resampled with replacement)."""
    _check_metric(metric, n_samples, confidence)
    t, p = _pair(y_true, y_pred, num_classes)
    stats = np.concatenate([_resampled(metric, t, p, idx, num_classes) for idx in _index_chunks(t.size, n_samples, seed)])
    return _percentile_ci(stats, confidence)


def mcnemar_exact(y_true: Any, pred_a: Any, pred_b: Any, num_classes: int = len(LABELS)) -> dict[str, Any]:
    """The exact (binomial) McNemar test of paired accuracy: do ``a`` and ``b`` err on different rows more often in
    one direction than chance allows?

    Only discordant rows count: ``b01`` rows where ``a`` is right and ``b`` wrong, ``b10`` the reverse. Under the null
    hypothesis (equal accuracy) ``b01 ~ Binomial(b01 + b10, 1/2)``; the p-value is scipy's two-sided exact binomial
    test. No discordant row at all gives p = 1.
    """
    from scipy.stats import binomtest

    t, a = _pair(y_true, pred_a, num_classes)
    _, b = _pair(y_true, pred_b, num_classes)
    a_ok, b_ok = a == t, b == t
    b01, b10 = int(np.sum(a_ok & ~b_ok)), int(np.sum(~a_ok & b_ok))
    p = 1.0 if b01 + b10 == 0 else float(binomtest(b01, b01 + b10, 0.5, alternative="two-sided").pvalue)
    return {"mcnemar_p": min(1.0, p), "discordant": [b01, b10]}


def paired_bootstrap(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    metric: Metric = "accuracy",
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    num_classes: int = len(LABELS),
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(a) - metric(b)``: both models are scored on the same resampled rows.

    Returns ``{"metric", "diff", "ci": [lo, hi], "confidence", "n_samples"}`` (plus ``"a"``/``"b"`` when names
    are given). ``diff`` is measured on the full set; ``ci`` is the percentile interval of the resampled
    differences at ``confidence``, as computed (not widened to contain ``diff``).

    For accuracy, the exact McNemar test of the same pair is added: ``mcnemar_p`` (two-sided, exact binomial on
    the discordant rows) and ``discordant`` = ``[a right and b wrong, a wrong and b right]``. Macro-F1 has no
    per-row test; its comparison carries the interval only.
    """
    _check_metric(metric, n_samples, confidence)
    t, a = _pair(y_true, pred_a, num_classes)
    _, b = _pair(y_true, pred_b, num_classes)
    diffs = np.concatenate(
        [
            _resampled(metric, t, a, idx, num_classes) - _resampled(metric, t, b, idx, num_classes)
            for idx in _index_chunks(t.size, n_samples, seed)
        ]
    )
    diff = _metric_full(metric, t, a, num_classes) - _metric_full(metric, t, b, num_classes)
    # Identical predictions give exact zeros; tiny float noise must not show as a difference.
    diffs = np.where(np.abs(diffs) < 1e-12, 0.0, diffs)
    if abs(diff) < 1e-12:
        diff = 0.0
    lo, hi = _percentile_ci(diffs, confidence)
    out: dict[str, Any] = {
        "metric": metric,
        "diff": float(diff),
        "ci": [lo, hi],
        "confidence": float(confidence),
        "n_samples": int(n_samples),
    }
    if metric == "accuracy":
        out.update(mcnemar_exact(t, a, b, num_classes))
    if name_a is not None:
        out["a"] = name_a
    if name_b is not None:
        out["b"] = name_b
    return out


def agreement(pred_a: Any, pred_b: Any) -> float:
    """Share of rows where two models predict the same class (logit matrices are argmaxed first)."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    a = predictions(a) if a.ndim == 2 else a
    b = predictions(b) if b.ndim == 2 else b
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"predictions differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("cannot compare zero predictions")
    return float(np.mean(a == b))


# --------------------------------------------------------------------------------------------- results rows

_CORE_KEYS = frozenset(
    {"name", "role", "n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confidence", "per_class",
     "confusion_matrix"}
)


def _row(name: str, role: str, y_true: Any, y_pred: np.ndarray, eval_cfg: EvalConfig) -> dict[str, Any]:
    metrics = classification_metrics(y_true, y_pred)
    row: dict[str, Any] = {"name": name, "role": role, "n": int(np.asarray(y_pred).size)}
    for metric in METRICS:
        lo, hi = bootstrap_ci(
            y_true, y_pred, metric, n_samples=eval_cfg.bootstrap_samples, confidence=eval_cfg.confidence,
            seed=eval_cfg.seed,
        )
        # The percentile interval as computed: in tiny or degenerate samples it can miss the point estimate.
        row[metric] = metrics[metric]
        row[f"{metric}_ci"] = [lo, hi]
    row["confidence"] = float(eval_cfg.confidence)
    row["per_class"] = metrics["per_class"]
    row["confusion_matrix"] = metrics["confusion_matrix"]
    return row


def _add_extra(row: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(extra) & (_CORE_KEYS | {"agreement_with_teacher"}))
    if clash:
        raise ValueError(f"extra keys would overwrite computed ones: {', '.join(clash)}")
    row.update(extra)
    return row


def evaluate_row(
    name: str,
    role: str,
    y_true: Any,
    logits: np.ndarray,
    eval_cfg: EvalConfig,
    reference_logits: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A results row for one model from its eval-set logits ``[N, C]``.

    Keys: name, role, n, accuracy, accuracy_ci, macro_f1, macro_f1_ci, confidence (the level of both intervals),
    per_class, confusion_matrix, then
    agreement_with_teacher when ``reference_logits`` (the teacher's logits on the same rows) is given, then
    ``extra`` (params, trainable_params, train_wall_time_s, examples_per_s, ...). Predictions are not stored;
    use :func:`predictions` on the logits.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(LABELS):
        raise ValueError(f"logits must have shape [N, {len(LABELS)}], got {logits.shape}")
    row = _row(name, role, y_true, predictions(logits), eval_cfg)
    if reference_logits is not None:
        row["agreement_with_teacher"] = agreement(predictions(logits), np.asarray(reference_logits))
    return _add_extra(row, extra)


def majority_row(y_true: Any, train_labels: Any, eval_cfg: EvalConfig, **extra: Any) -> dict[str, Any]:
    """The majority-class baseline: the most frequent TRAINING label (ties: lowest id) predicted for every row.

    Training labels of ``-1`` (unlabelled transfer texts) are ignored.
    """
    majority = majority_class(train_labels)
    y_pred = np.full(np.asarray(y_true).shape, majority, dtype=np.int64)
    row = _row(f"majority class ({LABELS[majority]})", "majority", y_true, y_pred, eval_cfg)
    return _add_extra(row, {"params": 0, "trainable_params": 0, **extra})


# --------------------------------------------------------------------------------------------- health

# Models whose health the run reports (the untrained baseline is expected to fail).
CHECKED_ROLES: tuple[str, ...] = ("teacher", "student_ce", "student_distilled")


def majority_class(train_labels: Any) -> int:
    """The most frequent training label (ties: lowest id); ``-1`` (unlabelled transfer rows) is ignored."""
    train = np.asarray(train_labels, dtype=np.int64)
    train = train[train >= 0]
    if train.size == 0:
        raise ValueError("the majority class needs at least one labelled training example")
    return int(np.bincount(_as_ids(train, len(LABELS), "train_labels"), minlength=len(LABELS)).argmax())


def health_check(y_true: Any, logits: np.ndarray, train_labels: Any) -> dict[str, Any]:
    """A model's health on labelled rows: accuracy, macro-F1, per-class recall, the confusion matrix (rows true,
    columns predicted) and the accuracy of always answering the training majority class on the same rows."""
    y = _as_ids(y_true, len(LABELS), "y_true")
    metrics = classification_metrics(y, predictions(np.asarray(logits)))
    majority = majority_class(train_labels)
    return {"n": int(y.size), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "recall": {name: m["recall"] for name, m in metrics["per_class"].items()},
            "confusion_matrix": metrics["confusion_matrix"],
            "majority": {"class": LABELS[majority], "accuracy": float(np.mean(y == majority))}}


def health_problems(check: dict[str, Any], min_class_recall: float, who: str = "teacher",
                    split: str = "dev") -> list[str]:
    """What is wrong in a :func:`health_check`, one phrase each: a class whose recall is below ``min_class_recall``
    (with its confusion row's largest error), and accuracy below the majority class."""
    cm = np.asarray(check["confusion_matrix"])
    problems = []
    for i, name in enumerate(LABELS):
        support, recall = int(cm[i].sum()), float(check["recall"][name])
        if support == 0 or recall >= min_class_recall:
            continue
        wrong, j = max((int(cm[i, j]), j) for j in range(len(LABELS)) if j != i)
        verb = "never predicts" if cm[:, i].sum() == 0 else "rarely predicts"
        problems.append(f"{who} {verb} {name!r} on {split} (recall {recall:.2f}; {wrong} of {support} {name} texts "
                        f"called {LABELS[j]!r})")
    majority = check["majority"]
    if check["accuracy"] < majority["accuracy"]:
        problems.append(f"{who} scores below the majority class on {split} (accuracy {check['accuracy']:.3f} < "
                        f"{majority['accuracy']:.3f} for always {majority['class']!r})")
    return problems


def row_warnings(rows: Sequence[dict[str, Any]], split: str = "the evaluation split") -> list[str]:
    """Warnings about the saved models of a results table: a class a model never predicts on ``split``, and a model
    below the majority-class row."""
    majority = next((r["accuracy"] for r in rows if r["role"] == "majority"), None)
    warnings = []
    for row in rows:
        if row["role"] not in CHECKED_ROLES:
            continue
        cm = np.asarray(row["confusion_matrix"])
        for i, name in enumerate(LABELS):
            if cm[:, i].sum() == 0 and cm[i].sum() > 0:
                warnings.append(f"{row['name']} never predicts {name!r} on {split} ({int(cm[i].sum())} {name} texts)")
        if majority is not None and row["accuracy"] < majority:
            warnings.append(f"{row['name']} scores below the majority class on {split} "
                            f"(accuracy {row['accuracy']:.3f} < {majority:.3f})")
    return warnings


# A transfer source whose teacher labels are nearly all one class teaches the student little.
ONE_CLASS_SHARE = 0.95


def transfer_source_labels(sources: Sequence[str], teacher_logits: np.ndarray) -> dict[str, dict[str, int]]:
    """Per transfer source: how many of its texts the teacher puts in each class."""
    pred = predictions(np.asarray(teacher_logits))
    out: dict[str, dict[str, int]] = {}
    for source, p in zip(sources, pred):
        counts = out.setdefault(source, {name: 0 for name in LABELS})
        counts[LABELS[int(p)]] += 1
    return out


def source_warnings(labels: dict[str, dict[str, int]]) -> list[str]:
    """A warning for each source whose teacher labels are more than :data:`ONE_CLASS_SHARE` one class."""
    warnings = []
    for source, counts in labels.items():
        total = sum(counts.values())
        name, top = max(counts.items(), key=lambda item: item[1])
        if total and top / total > ONE_CLASS_SHARE:
            warnings.append(f"transfer source {source!r}: the teacher calls {top / total:.0%} of its {total} texts "
                            f"{name!r}, so it teaches the student little beyond that class")
    return warnings


def mean_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
    """Mean over rows of KL(teacher || student) between the softmax distributions (nats, temperature 1)."""
    p, q = softmax(teacher_logits), softmax(student_logits)
    return float(np.mean(np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)))


def fidelity(sources: Sequence[str], teacher_logits: np.ndarray, students: dict[str, tuple[str, np.ndarray]],
             eval_cfg: EvalConfig) -> dict[str, Any]:
    """How much of the teacher each student keeps on held-out transfer texts, per source (style), without labels.

    Per source: its held-out texts, the teacher's label distribution on them, and per student role (name,
    ``[M, 3]`` logits on the same texts): agreement with the teacher's class, with a bootstrap CI (the teacher's
    classes are the reference), and the mean KL from the teacher's distribution to the student's."""
    sources = list(sources)
    teacher_pred = predictions(np.asarray(teacher_logits))
    out: dict[str, Any] = {"confidence": eval_cfg.confidence, "sources": {}}
    for source in dict.fromkeys(sources):
        rows = np.array([i for i, s in enumerate(sources) if s == source])
        entry: dict[str, Any] = {"n": int(len(rows)), "teacher_labels": {
            name: int((teacher_pred[rows] == c).sum()) for c, name in enumerate(LABELS)}, "models": {}}
        for role, (name, logits) in students.items():
            student_pred = predictions(np.asarray(logits)[rows])
            lo, hi = bootstrap_ci(teacher_pred[rows], student_pred, "accuracy", eval_cfg.bootstrap_samples,
                                  eval_cfg.confidence, eval_cfg.seed)
            entry["models"][role] = {"name": name, "agreement": float((student_pred == teacher_pred[rows]).mean()),
                                     "agreement_ci": [lo, hi],
                                     "mean_kl": mean_kl(np.asarray(teacher_logits)[rows], np.asarray(logits)[rows])}
        out["sources"][source] = entry
    return out
