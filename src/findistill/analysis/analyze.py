"""Bias, robustness and calibration analysis of a run's models, or of one saved model on a labelled file.

For every model with evaluation logits (the teacher and each student row of a run):

* **slices**: accuracy and macro-F1 with bootstrap CIs on slices of the evaluation tweets (:data:`SLICES`), plus the
  agreement with the teacher on each slice;
* **calibration**: expected calibration error (15 equal-width confidence bins) and the reliability bins; for models
  that can be run, a temperature fitted by NLL on (a seeded subset of) the DEV split, never the evaluation split,
  and the ECE on the evaluation split after dividing the logits by it;
* **counterfactual entity swap**: company names and cashtags in evaluation tweets replaced by other companies from
  ``resources/entities.json`` (one consistent mapping per tweet: ``$AAPL`` → ``$XOM`` and "Apple" → "Exxon"); how
  often the predicted class flips, with a bootstrap CI, and the entities whose insertion flips most. Every cashtag
  is swapped; a company name only when it is on the list (a tweet "$DELL - Dell cuts ..." keeps "Dell");
* **probes**: the hand-written negation / hedging / polarity / neutral minimal pairs of ``resources/probes.jsonl``
  (expected labels; a hedge keeps the direction of the plain statement); accuracy per kind and per pair;
* **teacher–student**: the tweets where the teacher and a student disagree most (total-variation distance between
  their probability vectors), top 20 of each kind (teacher right, student right, both wrong).

`findistill analyze RUN` writes ``RUN/analysis/`` (``analysis.json``, ``figures/*.png``), ``RUN/report.html``,
``calibration.json`` and a model card ``README.md`` in every saved student folder. `findistill analyze --model DIR
--eval-file F` writes the same analysis of one saved model on a labelled file into ``--out``.

The extra forward passes are bounded (:data:`DEV_FIT_MAX`, :data:`SWAP_MAX` and the probes), so the stage at the end
of `findistill run` costs seconds for the students; the teacher's extra logits are cached in the run folder.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from findistill.config import LABEL2ID, LABELS, EvalConfig
from findistill.data.splits import TextSplit
from findistill.errors import DataError
from findistill.evaluation.metrics import (agreement, bootstrap_ci, evaluate_row, macro_f1_from_confusion,
                                 predictions)
from findistill.models.inference import softmax
from findistill.models.labels import NAME_THE_CLASSES, canonical_logits, class_columns
from findistill.io import atomic_directory, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

N_BINS = 15
DEV_FIT_MAX = 500  # dev texts the temperature is fitted on (seeded subset)
SWAP_MAX = 300  # evaluation tweets with an entity that are swapped (seeded subset)
TOP_DISAGREEMENTS = 20
CALIBRATION_FILE = "calibration.json"
# Student roles of a run and the folders they are saved in (the untrained baseline has no folder).
STUDENT_FOLDERS = {"student_distilled": "student", "student_ce": "student_ce"}
ROLE_ORDER = ("teacher", "student_baseline", "student_ce", "student_distilled")

# ----------------------------------------------------------------------------------------------- slices

_URL = re.compile(r"https?://\S+")
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b")
_DIGIT = re.compile(r"\d")
_PERCENT = re.compile(r"\d\s?%|\bper ?cent\b", re.IGNORECASE)
_CAPS_WORD = re.compile(r"\b[A-Z]{4,}\b")
_TRUNCATED = re.compile(r"(…|\.\.\.)$")

SLICES: dict[str, str] = {
    "all": "every evaluation tweet",
    "cashtag": "at least one cashtag ($AAPL)",
    "cashtags_2plus": "two or more cashtags",
    "url": "contains a URL",
    "truncated": "ends truncated: '…' or '...' once trailing URLs are removed",
    "number": "a digit outside URLs and cashtags",
    "percentage": "a percentage ('5%', 'percent')",
    "all_caps": "a word of 4+ capital letters (cashtags and URLs excluded)",
    "length_q1": "length quartile 1 (shortest, characters)",
    "length_q2": "length quartile 2",
    "length_q3": "length quartile 3",
    "length_q4": "length quartile 4 (longest)",
}


def slice_masks(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks ``[N]`` per slice of :data:`SLICES`, in that order; length quartiles from these texts."""
    texts = list(texts)
    plain = [_CASHTAG.sub(" ", _URL.sub(" ", t)) for t in texts]  # no URLs, no cashtags
    cashtags = np.array([len(_CASHTAG.findall(t)) for t in texts], dtype=int)
    lengths = np.array([len(t) for t in texts], dtype=float)
    edges = np.quantile(lengths, [0.25, 0.5, 0.75]) if texts else np.zeros(3)
    quartile = np.searchsorted(edges, lengths, side="left")
    masks = {
        "all": np.ones(len(texts), dtype=bool),
        "cashtag": cashtags >= 1,
        "cashtags_2plus": cashtags >= 2,
        "url": np.array([bool(_URL.search(t)) for t in texts], dtype=bool),
        "truncated": np.array([bool(_TRUNCATED.search(_URL.sub("", t).rstrip())) for t in texts], dtype=bool),
        "number": np.array([bool(_DIGIT.search(p)) for p in plain], dtype=bool),
        "percentage": np.array([bool(_PERCENT.search(p)) for p in plain], dtype=bool),
        "all_caps": np.array([bool(_CAPS_WORD.search(p)) for p in plain], dtype=bool),
    }
    for q in range(4):
        masks[f"length_q{q + 1}"] = quartile == q
    return masks


def slice_rows(y: np.ndarray, logits: np.ndarray, masks: dict[str, np.ndarray], eval_cfg: EvalConfig,
               teacher_logits: np.ndarray | None) -> list[dict[str, Any]]:
    """Per slice: n, accuracy and macro-F1 with bootstrap CIs, and the agreement with the teacher."""
    pred = predictions(logits)
    teacher_pred = None if teacher_logits is None else predictions(teacher_logits)
    k = len(LABELS)
    rows = []
    for name, mask in masks.items():
        row: dict[str, Any] = {"slice": name, "n": int(mask.sum())}
        if row["n"]:
            t, p = y[mask], pred[mask]
            row["accuracy"] = float(np.mean(t == p))
            row["macro_f1"] = float(macro_f1_from_confusion(np.bincount(t * k + p, minlength=k * k).reshape(k, k)))
            for metric in ("accuracy", "macro_f1"):
                row[f"{metric}_ci"] = list(bootstrap_ci(t, p, metric, eval_cfg.bootstrap_samples,
                                                        eval_cfg.confidence, eval_cfg.seed))
            if teacher_pred is not None:
                row["agreement_with_teacher"] = agreement(p, teacher_pred[mask])
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- calibration


def _bin_ids(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence: bin i holds (i/n, (i+1)/n]; 0 goes to the first bin."""
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.digitize(confidence, inner, right=True)


def reliability(probs: np.ndarray, y: Sequence[int], n_bins: int = N_BINS) -> dict[str, list]:
    """Per confidence bin: count, mean confidence and accuracy (None for empty bins)."""
    probs, y = np.asarray(probs), np.asarray(y)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    ids = _bin_ids(conf, n_bins)
    counts = np.bincount(ids, minlength=n_bins)
    conf_sum = np.bincount(ids, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(ids, weights=correct.astype(float), minlength=n_bins)
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(), "count": counts.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, counts)],
            "accuracy": [float(a / n) if n else None for a, n in zip(acc_sum, counts)]}


def expected_calibration_error(probs: np.ndarray, y: Sequence[int], n_bins: int = N_BINS) -> float:
    """ECE = sum over bins of (bin size / N) * |accuracy(bin) - mean confidence(bin)|, equal-width bins."""
    probs, y = np.asarray(probs), np.asarray(y)
    if probs.ndim != 2 or len(probs) != len(y) or not len(y):
        raise ValueError(f"probs [N, C] and y [N] must match and be non-empty, got {probs.shape} and {len(y)}")
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    ids = _bin_ids(conf, n_bins)
    gap = np.abs(np.bincount(ids, weights=correct, minlength=n_bins) - np.bincount(ids, weights=conf, minlength=n_bins))
    return float(gap.sum() / len(y))


def fit_temperature(logits: np.ndarray, y: Sequence[int]) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of ``softmax(logits / T)`` on (dev) labels ``y``."""
    from scipy.optimize import minimize_scalar

    logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y)
    if not len(y):
        raise ValueError("fitting a temperature needs at least one labelled example")

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(best.x))


# ----------------------------------------------------------------------------------------------- entity swap


@dataclass(frozen=True)
class Entity:
    name: str
    ticker: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    surface: str
    key: str  # the company's name, or "$TICKER" for a cashtag not in the list
    kind: str  # "ticker" or "name"


@dataclass(frozen=True)
class Swap:
    original: str
    text: str
    mentions: tuple[Mention, ...]
    replacements: tuple[tuple[str, str], ...]  # (surface in the original, surface in the swapped text), in order
    mapping: dict[str, str]  # original key -> inserted company name


def load_entities() -> list[Entity]:
    raw = json.loads(resources.files("findistill").joinpath("resources/entities.json").read_text(encoding="utf-8"))
    return [Entity(e["name"], e["ticker"], tuple(e.get("aliases", ()))) for e in raw]


@functools.lru_cache(maxsize=4)
def _name_pattern(entities: tuple[Entity, ...]) -> re.Pattern:
    names = sorted({n for e in entities for n in (e.name, *e.aliases)}, key=len, reverse=True)
    return re.compile(r"(?<![\w$])(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)")


def find_mentions(text: str, entities: Sequence[Entity]) -> list[Mention]:
    """Cashtags (any ticker) and company names / aliases from the list, left to right, outside URLs."""
    by_ticker = {e.ticker.upper(): e for e in entities}
    by_name = {n: e for e in entities for n in (e.name, *e.aliases)}
    urls = [m.span() for m in _URL.finditer(text)]

    def in_url(pos: int) -> bool:
        return any(a <= pos < b for a, b in urls)

    found = []
    for m in _CASHTAG.finditer(text):
        if not in_url(m.start()):
            entity = by_ticker.get(m.group(1).upper())
            key = entity.name if entity else f"${m.group(1).upper()}"
            found.append(Mention(m.start(), m.end(), m.group(0), key, "ticker"))
    for m in _name_pattern(tuple(entities)).finditer(text):
        if not in_url(m.start()):
            found.append(Mention(m.start(), m.end(), m.group(0), by_name[m.group(0)].name, "name"))
    return sorted(found, key=lambda mention: mention.start)


def swap_entities(text: str, entities: Sequence[Entity], rng: np.random.Generator) -> Swap | None:
    """``text`` with every mentioned company replaced by another one from the list (None: no mention).

    Each distinct company in the tweet gets its own replacement, never a company already in the tweet; its cashtags
    become the replacement's cashtag and its names the replacement's name. Nothing else in the text changes.
    """
    mentions = find_mentions(text, entities)
    if not mentions:
        return None
    keys = list(dict.fromkeys(m.key for m in mentions))
    pool = [e for e in entities if e.name not in keys]
    if len(keys) > len(pool):
        return None
    chosen = rng.choice(len(pool), size=len(keys), replace=False)
    mapping = {key: pool[int(i)] for key, i in zip(keys, chosen)}
    pieces, replacements, last = [], [], 0
    for m in mentions:
        new = f"${mapping[m.key].ticker}" if m.kind == "ticker" else mapping[m.key].name
        pieces += [text[last:m.start], new]
        replacements.append((m.surface, new))
        last = m.end
    pieces.append(text[last:])
    return Swap(text, "".join(pieces), tuple(mentions), tuple(replacements),
                {key: e.name for key, e in mapping.items()})


def build_swaps(texts: Sequence[str], entities: Sequence[Entity], max_items: int, seed: int
                ) -> list[tuple[int, Swap]]:
    """(evaluation index, swap) for a seeded subset of at most ``max_items`` tweets that mention a company."""
    rng = np.random.default_rng(seed)
    swaps = [(i, s) for i, t in enumerate(texts) if (s := swap_entities(t, entities, rng)) is not None]
    if len(swaps) > max_items:
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(swaps), size=max_items, replace=False))
        swaps = [swaps[int(k)] for k in keep]
    return swaps


def flip_summary(original_pred: np.ndarray, swapped_pred: np.ndarray, eval_cfg: EvalConfig) -> dict[str, Any]:
    """Flips of the predicted class under the swap, the flip rate and its bootstrap CI."""
    flips = original_pred != swapped_pred
    # The flip rate is 1 - "accuracy" of the swapped predictions against the original ones.
    lo, hi = bootstrap_ci(original_pred, swapped_pred, "accuracy", eval_cfg.bootstrap_samples, eval_cfg.confidence,
                          eval_cfg.seed)
    return {"n": int(flips.size), "flips": int(flips.sum()), "flip_rate": float(flips.mean()),
            "flip_rate_ci": [1.0 - hi, 1.0 - lo]}


def flips_by_entity(swaps: Sequence[tuple[int, Swap]], flips: dict[str, np.ndarray], side: str) -> list[dict]:
    """Per company (``side``: "inserted" or "replaced"): swaps it took part in and flips per model, most first."""
    stats: dict[str, dict[str, Any]] = {}
    for j, (_, swap) in enumerate(swaps):
        names = swap.mapping.values() if side == "inserted" else swap.mapping.keys()
        for name in dict.fromkeys(names):
            entry = stats.setdefault(name, {"entity": name, "swaps": 0, "flips": {role: 0 for role in flips}})
            entry["swaps"] += 1
            for role, f in flips.items():
                entry["flips"][role] += int(f[j])
    return sorted(stats.values(), key=lambda e: (-sum(e["flips"].values()), -e["swaps"], e["entity"]))


# ----------------------------------------------------------------------------------------------- probes


def load_probes() -> list[dict[str, str]]:
    text = resources.files("findistill").joinpath("resources/probes.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def probe_summary(probes: Sequence[dict[str, str]], logits: np.ndarray) -> dict[str, Any]:
    """Accuracy on the probes overall, per kind and per pair (a pair counts when both texts are right)."""
    pred = predictions(logits)
    gold = np.array([LABEL2ID[p["label"]] for p in probes])
    correct = pred == gold
    kinds, pairs = {}, {}
    for i, p in enumerate(probes):
        kinds.setdefault(p["kind"], []).append(correct[i])
        pairs.setdefault(p["pair"], []).append(correct[i])
    return {"accuracy": float(correct.mean()), "pair_accuracy": float(np.mean([all(v) for v in pairs.values()])),
            "by_kind": {k: float(np.mean(v)) for k, v in kinds.items()},
            "predicted": [LABELS[int(i)] for i in pred]}


# ----------------------------------------------------------------------------------------------- teacher–student


def disagreements(texts: Sequence[str], y: np.ndarray, teacher_logits: np.ndarray, student_logits: np.ndarray,
                  top: int = TOP_DISAGREEMENTS) -> dict[str, list[dict[str, Any]]]:
    """The evaluation tweets where teacher and student predict different classes, by kind, largest
    total-variation distance between their probability vectors first."""
    pt, ps = softmax(teacher_logits), softmax(student_logits)
    t, s = pt.argmax(1), ps.argmax(1)
    distance = 0.5 * np.abs(pt - ps).sum(axis=1)
    kinds = {"teacher_right": (t == y) & (s != y), "student_right": (s == y) & (t != y),
             "both_wrong": (t != s) & (t != y) & (s != y)}
    out = {}
    for kind, mask in kinds.items():
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-distance[idx], kind="stable")][:top]
        out[kind] = [{"index": int(i), "text": texts[i], "gold": LABELS[int(y[i])], "teacher": LABELS[int(t[i])],
                      "student": LABELS[int(s[i])], "distance": float(distance[i]),
                      "teacher_probs": [round(float(v), 4) for v in pt[i]],
                      "student_probs": [round(float(v), 4) for v in ps[i]]} for i in idx]
    return out


# ----------------------------------------------------------------------------------------------- the analysis

# (texts by purpose) -> logits by purpose, each [N, 3] in canonical class order
ExtraLogits = Callable[[dict[str, list[str]]], dict[str, np.ndarray]]


@dataclass
class ModelSpec:
    """A model to analyse: its evaluation logits and, when it can be run, a function giving more logits."""

    role: str
    name: str
    eval_logits: np.ndarray
    extra_logits: ExtraLogits | None = None


def _seeded_subset(split: TextSplit, max_items: int, seed: int) -> TextSplit:
    labelled = [i for i, label in enumerate(split.labels) if label >= 0]
    if len(labelled) > max_items:
        labelled = sorted(np.random.default_rng(seed).choice(labelled, size=max_items, replace=False).tolist())
    return split.subset(labelled)


def analyze(models: Sequence[ModelSpec], eval_split: TextSplit, dev_split: TextSplit | None, eval_cfg: EvalConfig,
            seed: int = 0, student_role: str | None = None) -> dict[str, Any]:
    """The analysis document (JSON-able) of ``models`` on ``eval_split``; temperatures are fitted on ``dev_split``.

    ``student_role`` names the student compared with the ``teacher`` model for the disagreement examples.
    """
    texts, y = eval_split.texts, np.asarray(eval_split.labels)
    if (y < 0).any():
        raise DataError(f"split {eval_split.name!r}: every evaluation text needs a gold label")
    for m in models:
        if m.eval_logits.shape != (len(y), len(LABELS)):
            raise DataError(f"{m.role}: {m.eval_logits.shape[0]} evaluation logits for {len(y)} evaluation texts; "
                            "the predictions belong to other data")
    masks = slice_masks(texts)
    teacher = next((m for m in models if m.role == "teacher"), None)
    teacher_logits = teacher.eval_logits if teacher is not None else None
    dev = _seeded_subset(dev_split, DEV_FIT_MAX, seed) if dev_split is not None and len(dev_split) else None
    swaps = build_swaps(texts, load_entities(), SWAP_MAX, seed)
    probes = load_probes()
    wanted = {"swap": [s.text for _, s in swaps], "probes": [p["text"] for p in probes]}
    if dev is not None and len(dev):
        wanted["dev"] = dev.texts

    doc: dict[str, Any] = {
        "eval": {"split": eval_split.name, "n": len(y)},
        "models": [{"role": m.role, "name": m.name} for m in models],
        "slices": {"definitions": SLICES, "sizes": {k: int(v.sum()) for k, v in masks.items()}, "rows": {}},
        "confusion_matrices": {}, "calibration": {},
        "entity_swap": {"n": len(swaps), "models": {}, "examples": []},
        "probes": {"n": len(probes), "items": probes, "models": {}},
        "settings": {"n_bins": N_BINS, "dev_fit_max": DEV_FIT_MAX, "swap_max": SWAP_MAX, "seed": seed,
                     "bootstrap_samples": eval_cfg.bootstrap_samples, "confidence": eval_cfg.confidence},
    }
    flips: dict[str, np.ndarray] = {}
    swapped_preds: dict[str, np.ndarray] = {}
    for m in models:
        log.info("[analyze] %s", m.name)
        pred = predictions(m.eval_logits)
        doc["slices"]["rows"][m.role] = slice_rows(y, m.eval_logits, masks, eval_cfg,
                                                   teacher_logits if m.role != "teacher" else None)
        doc["confusion_matrices"][m.role] = np.bincount(y * len(LABELS) + pred, minlength=len(LABELS) ** 2
                                                        ).reshape(len(LABELS), len(LABELS)).tolist()
        probs = softmax(m.eval_logits)
        cal: dict[str, Any] = {"ece": expected_calibration_error(probs, y), "bins": reliability(probs, y),
                               "temperature": None}
        if m.extra_logits is not None:
            extra = m.extra_logits({k: v for k, v in wanted.items() if v})
            if dev is not None and "dev" in extra:
                temperature = fit_temperature(extra["dev"], dev.labels)
                after = softmax(m.eval_logits, temperature)
                cal.update(temperature=temperature, fitted_on="dev", dev_examples=len(dev),
                           ece_after=expected_calibration_error(after, y), bins_after=reliability(after, y))
            if swaps:
                swapped_preds[m.role] = predictions(extra["swap"])
                original = pred[[i for i, _ in swaps]]
                flips[m.role] = original != swapped_preds[m.role]
                doc["entity_swap"]["models"][m.role] = flip_summary(original, swapped_preds[m.role], eval_cfg)
            doc["probes"]["models"][m.role] = probe_summary(probes, extra["probes"])
        doc["calibration"][m.role] = cal
    if flips:
        doc["entity_swap"]["by_inserted"] = flips_by_entity(swaps, flips, "inserted")
        doc["entity_swap"]["by_replaced"] = flips_by_entity(swaps, flips, "replaced")
        original_preds = {m.role: predictions(m.eval_logits) for m in models if m.role in flips}
        any_flip = np.logical_or.reduce(list(flips.values()))
        for j in np.flatnonzero(any_flip)[:TOP_DISAGREEMENTS]:
            i, swap = swaps[int(j)]
            doc["entity_swap"]["examples"].append({
                "index": i, "original": swap.original, "swapped": swap.text,
                "predicted": {role: [LABELS[int(original_preds[role][i])], LABELS[int(swapped_preds[role][j])]]
                              for role in flips}})
    if teacher is not None and student_role is not None:
        student = next(m for m in models if m.role == student_role)
        doc["teacher_student"] = {
            "student": student_role,
            "agreement": float(np.mean(predictions(teacher.eval_logits) == predictions(student.eval_logits))),
            "disagreements": disagreements(texts, y, teacher.eval_logits, student.eval_logits)}
    return doc


# ----------------------------------------------------------------------------------------------- running models


def hf_extra_logits(folder: Path, max_length: int, batch_size: int) -> ExtraLogits:
    """Load the saved classifier of ``folder`` (any variant :func:`~findistill.deploy.runtime.load_classifier`
    reads) when called, run every purpose's texts, then drop it. Columns are mapped onto the classes by
    :func:`~findistill.models.labels.class_columns`: a model whose classes it cannot map is refused."""

    def run(texts_by_purpose: dict[str, list[str]]) -> dict[str, np.ndarray]:
        from findistill.deploy.runtime import load_classifier

        classifier = load_classifier(folder, max_length=max_length)
        columns = class_columns(dict(enumerate(classifier.labels)), where=str(folder),
                               fix=NAME_THE_CLASSES)
        return {purpose: canonical_logits(classifier.predict_logits(texts, batch_size=batch_size), columns)
                for purpose, texts in texts_by_purpose.items()}

    return run


def write_calibration(folder: Path, calibration: dict[str, Any]) -> None:
    """``calibration.json`` in a student folder: the dev-fitted temperature and the evaluation ECE around it."""
    atomic_write_json(Path(folder) / CALIBRATION_FILE, {
        "temperature": round(calibration["temperature"], 6), "fitted_on": calibration["fitted_on"],
        "ece_before": calibration["ece"], "ece_after": calibration["ece_after"],
        "dev_examples": calibration["dev_examples"], "n_bins": N_BINS})


def write_outputs(folder: Path, doc: dict[str, Any], figures: dict[str, bytes]) -> None:
    with atomic_directory(folder) as tmp:
        atomic_write_json(tmp / "analysis.json", doc)
        for name, png in figures.items():
            (tmp / "figures").mkdir(exist_ok=True)
            (tmp / "figures" / f"{name}.png").write_bytes(png)


def analyze_model(model_dir: str | Path, eval_file: str | Path, out_dir: str | Path, label_map: dict[str, str],
                  text_column: str = "text", label_column: str = "label", dev_file: str | Path | None = None,
                  max_length: int = 128, batch_size: int = 64, eval_cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Analyse one saved classifier on a labelled file; a temperature is fitted only when ``dev_file`` is given
    (it is then written to ``model_dir/calibration.json``). Writes ``out_dir/analysis.json``, ``figures/`` and
    ``report.html``."""
    from findistill.analysis import html_report
    from findistill.data.splits import load_table

    folder, eval_cfg = Path(model_dir), eval_cfg or EvalConfig()
    ev = load_table(eval_file, text_column, label_column, label_map, "eval")
    dev = load_table(dev_file, text_column, label_column, label_map, "dev") if dev_file else None
    extra = hf_extra_logits(folder, max_length, batch_size)
    logits = extra({"eval": ev.texts})["eval"]
    spec = ModelSpec("model", folder.resolve().name, logits, extra)
    doc = analyze([spec], ev, dev, eval_cfg)
    doc["model"] = {"folder": str(folder.resolve()), "eval_file": str(eval_file),
                    "dev_file": str(dev_file) if dev_file else None}
    if doc["calibration"]["model"]["temperature"] is not None:
        write_calibration(folder, doc["calibration"]["model"])
    row = evaluate_row(spec.name, "model", ev.labels, logits, eval_cfg)
    figures = html_report.render_figures(doc, {})
    out = Path(out_dir)
    write_outputs(out, doc, figures)
    atomic_write_text(out / "report.html", html_report.render_html(doc, figures, {"rows": [row], "comparisons": []}))
    print(f"analysis: {out / 'report.html'}")
    return doc
