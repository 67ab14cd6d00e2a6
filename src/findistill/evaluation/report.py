"""Run results: build and validate the ``results.json`` document, render ``report.md``, write both atomically.

A results document is ``{"dataset": {...}, "rows": [...], "comparisons": [...], ...extra}``. Rows come from
:func:`findistill.evaluate.evaluate_row` / :func:`~findistill.evaluate.majority_row`; comparisons from
:func:`findistill.evaluate.paired_bootstrap`. Extra keys (``config``, ``augmentation``, ``created``,
``machine`` ...) are kept as given.

Intervals are named for what they are, not for one level: a row holds ``accuracy_ci`` / ``macro_f1_ci`` and the
``confidence`` they were computed at; a comparison holds ``ci`` and ``confidence``, and for accuracy the exact
McNemar p-value ``mcnemar_p``. Documents written before this naming (``accuracy_ci95``, ``ci95``, ``p_value``, as in
the committed ``benchmarks/results/``) are read by :func:`load_results`, which renames their keys
(:func:`upgrade_legacy`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from findistill.config import LABELS
from findistill.errors import DataError, first_line
from findistill.io import atomic_write_json, atomic_write_text

# The roles a results row may have (the contract with the pipeline and the CLI table).
ROLES: tuple[str, ...] = ("majority", "teacher", "student_baseline", "student_ce", "student_distilled")
ROW_KEYS: tuple[str, ...] = (
    "name", "role", "n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confidence", "per_class",
    "confusion_matrix",
)
COMPARISON_KEYS: tuple[str, ...] = ("metric", "diff", "ci", "confidence")
_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
_TOL = 1e-9


# --------------------------------------------------------------------------------------------- validation


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy array or scalar
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: must be a finite number, got {value!r}")
    return float(value)


def _interval(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where}: must be [lo, hi], got {value!r}")
    lo, hi = _number(value[0], where), _number(value[1], where)
    if lo > hi + _TOL:
        raise ValueError(f"{where}: lo {lo} > hi {hi}")
    return lo, hi


def _confidence(value: Any, where: str) -> float:
    c = _number(value, where)
    if not 0.0 < c < 1.0:
        raise ValueError(f"{where}: must be in (0, 1), got {c}")
    return c


def _probability(value: Any, where: str) -> float:
    p = _number(value, where)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}: must be in [0, 1], got {p}")
    return p


def validate_row(row: Mapping[str, Any], where: str = "row") -> None:
    """Raise ``ValueError`` unless ``row`` has every required key, a known role, metrics in [0, 1] and intervals
    ``[lo, hi]`` in [0, 1] with a confidence level. A percentile interval need not contain the point estimate."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(row).__name__}")
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"{where}: missing keys {', '.join(missing)}")
    where = f"{where} ({row['name']!r})"
    if not isinstance(row["name"], str) or not row["name"]:
        raise ValueError(f"{where}: name must be a non-empty string")
    if row["role"] not in ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}, got {row['role']!r}")
    if isinstance(row["n"], bool) or not isinstance(row["n"], int) or row["n"] < 1:
        raise ValueError(f"{where}: n must be a positive integer, got {row['n']!r}")
    for metric in ("accuracy", "macro_f1"):
        value = _number(row[metric], f"{where}.{metric}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}.{metric}: must be in [0, 1], got {value}")
        lo, hi = _interval(row[f"{metric}_ci"], f"{where}.{metric}_ci")
        if lo < -_TOL or hi > 1.0 + _TOL:
            raise ValueError(f"{where}.{metric}_ci: [{lo}, {hi}] is not inside [0, 1]")
    _confidence(row["confidence"], f"{where}.confidence")
    if "agreement_with_teacher" in row and row["agreement_with_teacher"] is not None:
        value = _number(row["agreement_with_teacher"], f"{where}.agreement_with_teacher")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}.agreement_with_teacher: must be in [0, 1], got {value}")
    if not isinstance(row["per_class"], Mapping):
        raise ValueError(f"{where}.per_class: must be a mapping of class -> metrics")
    cm = row["confusion_matrix"]
    if not isinstance(cm, list) or any(not isinstance(r, list) or len(r) != len(cm) for r in cm):
        raise ValueError(f"{where}.confusion_matrix: must be a square list of lists")


def validate_comparison(comp: Mapping[str, Any], where: str = "comparison") -> None:
    """Raise ``ValueError`` unless ``comp`` is a paired-bootstrap result (metric, diff, ci, confidence; for
    accuracy usually ``mcnemar_p``, checked when present)."""
    if not isinstance(comp, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(comp).__name__}")
    missing = [k for k in COMPARISON_KEYS if k not in comp]
    if missing:
        raise ValueError(f"{where}: missing keys {', '.join(missing)}")
    if comp["metric"] not in _METRIC_NAMES:
        raise ValueError(f"{where}.metric: must be one of {', '.join(_METRIC_NAMES)}, got {comp['metric']!r}")
    _number(comp["diff"], f"{where}.diff")
    _interval(comp["ci"], f"{where}.ci")
    _confidence(comp["confidence"], f"{where}.confidence")
    if comp.get("mcnemar_p") is not None:
        _probability(comp["mcnemar_p"], f"{where}.mcnemar_p")


def validate_results(results: Mapping[str, Any]) -> None:
    """Validate a whole results document (dataset mapping, rows, comparisons); raise ``ValueError``."""
    for key in ("dataset", "rows", "comparisons"):
        if key not in results:
            raise ValueError(f"results: missing key {key}")
    if not isinstance(results["dataset"], Mapping):
        raise ValueError("results.dataset: must be a mapping")
    if not isinstance(results["rows"], list) or not results["rows"]:
        raise ValueError("results.rows: must be a non-empty list")
    for i, row in enumerate(results["rows"]):
        validate_row(row, f"rows[{i}]")
    if not isinstance(results["comparisons"], list):
        raise ValueError("results.comparisons: must be a list")
    for i, comp in enumerate(results["comparisons"]):
        validate_comparison(comp, f"comparisons[{i}]")


def build_results(
    dataset_info: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]],
    /,
    **extra: Any,
) -> dict[str, Any]:
    """The results document; numpy values become plain JSON types. Raises ``ValueError`` when invalid."""
    clash = {"dataset", "rows", "comparisons"} & set(extra)
    if clash:
        raise ValueError(f"extra keys clash with results keys: {', '.join(sorted(clash))}")
    results = _jsonable({"dataset": dict(dataset_info), "rows": list(rows), "comparisons": list(comparisons), **extra})
    validate_results(results)
    try:
        json.dumps(results, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"results are not JSON-serialisable: {err}") from None
    return results


# --------------------------------------------------------------------------------------------- rendering


def human_params(n: Any) -> str:
    """22_713_216 -> '22.7M', 134_515_008 -> '135M', 1_100_048_384 -> '1.1B'; None -> '—'."""
    if n is None or isinstance(n, bool):
        return "—"
    n = float(n)
    if n < 1000:
        return f"{n:.0f}"
    units = ["K", "M", "B", "T"]
    i, value = 0, n / 1000
    while True:
        text = f"{value:.3g}"
        if float(text) >= 1000 and i < len(units) - 1:
            i, value = i + 1, value / 1000
            continue
        return f"{text}{units[i]}"


def level_label(items: Sequence[Mapping[str, Any]]) -> str:
    """``"95% CI"`` when every item (row or comparison) carries the same ``confidence``, else ``"CI"``."""
    levels = {float(i["confidence"]) for i in items if i.get("confidence") is not None}
    if len(levels) != 1:
        return "CI"
    return f"{next(iter(levels)) * 100:g}% CI"


def _fmt_ci(value: float, ci: Sequence[float] | None) -> str:
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table: model, role, params, accuracy [CI], macro-F1 [CI], agreement with teacher and
    examples/s (the last two only when some row has them)."""
    show_agree = any(r.get("agreement_with_teacher") is not None for r in rows)
    show_speed = any(r.get("examples_per_s") is not None for r in rows)
    level = level_label(rows)
    header = ["model", "role", "params", f"accuracy [{level}]", f"macro-F1 [{level}]"]
    header += ["agreement with teacher"] * show_agree + ["examples/s"] * show_speed
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in rows:
        cells = [
            _cell(r["name"]),
            _cell(r["role"]),
            human_params(r.get("params")),
            _fmt_ci(r["accuracy"], r.get("accuracy_ci")),
            _fmt_ci(r["macro_f1"], r.get("macro_f1_ci")),
        ]
        if show_agree:
            agree = r.get("agreement_with_teacher")
            cells.append("—" if agree is None else f"{agree:.3f}")
        if show_speed:
            speed = r.get("examples_per_s")
            cells.append("—" if speed is None else f"{speed:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _comparison_label(comp: Mapping[str, Any]) -> str:
    if comp.get("name"):
        return str(comp["name"])
    if comp.get("a") and comp.get("b"):
        return f"{comp['a']} − {comp['b']}"
    return "a − b"


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def render_comparisons(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """One bullet per paired comparison, e.g.
    ``- distilled − CE-only, accuracy: +0.012 [−0.003, +0.027] (95% CI); McNemar exact p = 0.140 (30 vs 20 rows)``.
    """
    lines = []
    for comp in comparisons:
        lo, hi = comp["ci"]
        metric = _METRIC_NAMES.get(comp["metric"], comp["metric"])
        text = (f"- {_comparison_label(comp)}, {metric}: {_signed(comp['diff'])} [{_signed(lo)}, {_signed(hi)}] "
                f"({level_label([comp])})")
        if comp.get("mcnemar_p") is not None:
            text += f"; McNemar exact {_p_text(comp['mcnemar_p'])}"
            if isinstance(comp.get("discordant"), (list, tuple)) and len(comp["discordant"]) == 2:
                text += f" ({comp['discordant'][0]} vs {comp['discordant'][1]} discordant rows)"
        lines.append(text)
    return "\n".join(lines) + ("\n" if lines else "")


def _dataset_line(info: Mapping[str, Any]) -> str:
    parts = []
    if info.get("name"):
        parts.append(f"`{info['name']}`")
    if info.get("split"):
        parts.append(f"split {info['split']}")
    if info.get("n") is not None:
        parts.append(f"n = {info['n']:,}")
    counts = info.get("label_counts")
    if isinstance(counts, Mapping) and counts:
        parts.append("labels: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    dup = info.get("duplicates")
    if isinstance(dup, Mapping):
        parts.append("duplicates: " + (", ".join(f"{k} {v}" for k, v in dup.items()) or "none"))
    elif isinstance(dup, (int, float)) and not isinstance(dup, bool):
        parts.append(f"duplicates: {dup:,}")
    elif dup:
        parts.append(f"duplicates: {dup}")
    return "**Dataset:** " + (" · ".join(parts) if parts else "(not described)")


def _per_class_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = list(rows[0]["per_class"]) if rows and rows[0].get("per_class") else list(LABELS)
    lines = ["## Per-class F1", "", "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for r in rows:
        pc = r.get("per_class", {})
        cells = [f"{pc[c]['f1']:.3f}" if c in pc else "—" for c in names]
        lines.append(f"| {_cell(r['name'])} | " + " | ".join(cells) + " |")
    lines += ["", "## Confusion matrices", "", f"Rows: true class, columns: predicted ({', '.join(names)}).", ""]
    for r in rows:
        cm = r.get("confusion_matrix", [])
        lines.append(f"- {r['name']}: " + " · ".join("[" + ", ".join(str(v) for v in row) + "]" for row in cm))
    return lines


def teacher_check_lines(check: Mapping[str, Any]) -> list[str]:
    """The health gate's section: the teacher on the dev split before it labelled anything, and its verdict."""
    recall = ", ".join(f"{name} {r:.2f}" for name, r in check["recall"].items())
    majority = check["majority"]
    verdict = ("passed" if not check.get("problems") else
               ("failed, and the run went on (teacher.health_gate: false): " if not check.get("health_gate", True)
                else "failed: ") + "; ".join(check["problems"]))
    return ["## Teacher check (dev split, before labelling)", "",
            f"{check.get('teacher', 'teacher')} on {check['n']} dev texts: accuracy {check['accuracy']:.3f} "
            f"(majority class '{majority['class']}' {majority['accuracy']:.3f}), macro-F1 {check['macro_f1']:.3f}, "
            f"recall {recall}. Gate (teacher.min_class_recall {check.get('min_class_recall', 0.2)}, above the "
            f"majority class): {verdict}."]


def transfer_sources_lines(sources: Mapping[str, Any]) -> list[str]:
    """The transfer texts by source: read, kept (and held out, when a slice is), and the classes the teacher gave the
    kept ones."""
    held = any("held_out" in s for s in sources.values())
    lines = ["## Transfer texts by source", "", "| source | read | kept | " + ("held out | " if held else "")
             + "teacher: negative / neutral / positive |", "|---|---:|---:|" + ("---:|" if held else "") + "---:|"]
    for name, s in sources.items():
        t = s.get("teacher_labels", {})
        lines.append(f"| {_cell(name)} | {s.get('read', 0):,} | {s.get('kept', 0):,} | "
                     + (f"{s.get('held_out', 0):,} | " if held else "")
                     + " / ".join(f"{t.get(c, 0):,}" for c in LABELS) + " |")
    return lines


FIDELITY_NOTE = ("Held-out transfer texts of each source (a seeded slice no student trained on): agreement is the "
                 "share of them on which the student picks the teacher's class, with a bootstrap CI; mean KL is from "
                 "the teacher's class distribution to the student's (nats). No labels are needed, so any corpus a "
                 "user adds is measured this way.")
FIDELITY_HEADER = ["source", "held out", "teacher: negative / neutral / positive", "student", "agreement [CI]",
                   "mean KL"]


def fidelity_rows(fid: Mapping[str, Any], roles: Sequence[str] | None = None) -> list[list[str]]:
    """Rows of :data:`FIDELITY_HEADER` from ``results["fidelity"]`` (one per source and student role)."""
    rows = []
    for source, entry in fid.get("sources", {}).items():
        teacher = " / ".join(f"{entry['teacher_labels'].get(c, 0):,}" for c in LABELS)
        for role, m in entry.get("models", {}).items():
            if roles is None or role in roles:
                rows.append([source, f"{entry['n']:,}", teacher, m["name"],
                             value_with_ci(m["agreement"], m["agreement_ci"]), f"{m['mean_kl']:.3f}"])
    return rows


def fidelity_lines(fid: Mapping[str, Any]) -> list[str]:
    lines = ["## Fidelity per source (held-out transfer texts)", "", FIDELITY_NOTE, "",
             "| " + " | ".join(FIDELITY_HEADER) + " |", "|---|---:|---:|---|---:|---:|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in fidelity_rows(fid)]
    return lines


def _augmentation_section(aug: Mapping[str, Any], max_examples: int = 5) -> list[str]:
    lines = ["## Augmentation", ""]
    generated, kept = aug.get("generated"), aug.get("kept")
    lines.append(f"Generated {generated if generated is not None else '?'} paraphrases, kept {kept if kept is not None else '?'}.")
    dropped = aug.get("dropped") or {}
    if dropped:
        lines.append("Dropped: " + ", ".join(f"{reason} {n}" for reason, n in dropped.items()) + ".")
    examples = list(aug.get("examples") or [])[:max_examples]
    if examples:
        lines += ["", "Examples:", ""]
        for ex in examples:
            if isinstance(ex, Mapping) and "paraphrase" in ex:
                original = ex.get("original", ex.get("text", ""))
                label = f" ({ex['label']})" if ex.get("label") is not None else ""
                lines.append(f"- {original!s} → {ex['paraphrase']!s}{label}")
            else:
                lines.append(f"- {ex}")
    return lines


def render_report(results: Mapping[str, Any], config_yaml: str | None = None) -> str:
    """The Markdown report of a run: dataset, results table, comparisons, per-class detail, augmentation, config."""
    title = results.get("name")
    if not title and isinstance(results.get("config"), Mapping):
        title = results["config"].get("name")
    lines = [f"# findistill report{': ' + str(title) if title else ''}", "", _dataset_line(results.get("dataset", {})), ""]
    meta = [f"{k}: {results[k]}" for k in ("created", "machine") if results.get(k)]
    if meta:
        lines += ["_" + " · ".join(meta) + "_", ""]
    if results.get("warnings"):
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in results["warnings"]] + [""]
    rows = results.get("rows", [])
    lines += ["## Results", "", render_table(rows).rstrip("\n"), ""]
    lines.append(f"Intervals: percentile bootstrap over evaluation rows ({level_label(rows)}), as computed.")
    lines.append("")
    if results.get("comparisons"):
        lines += ["## Paired comparisons", "", "Paired bootstrap (same resampled rows for both models); for accuracy "
                  "also the exact McNemar test (binomial on the rows where exactly one model is right).", ""]
        lines += [render_comparisons(results["comparisons"]).rstrip("\n"), ""]
    if rows:
        lines += _per_class_section(rows) + [""]
    if isinstance(results.get("teacher_check"), Mapping):
        lines += teacher_check_lines(results["teacher_check"]) + [""]
    if isinstance(results.get("transfer_sources"), Mapping):
        lines += transfer_sources_lines(results["transfer_sources"]) + [""]
    if isinstance(results.get("fidelity"), Mapping):
        lines += fidelity_lines(results["fidelity"]) + [""]
    if isinstance(results.get("augmentation"), Mapping):
        lines += _augmentation_section(results["augmentation"]) + [""]
    if config_yaml:
        lines += ["## Config", "", "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- files


def write_results(run_dir: Path, results: Mapping[str, Any], config_yaml: str | None = None) -> None:
    """Write ``results.json`` and ``report.md`` into ``run_dir``, each atomically (temp file + rename)."""
    run_dir = Path(run_dir)
    report = render_report(results, config_yaml)  # render first: a failure leaves neither file changed
    atomic_write_json(run_dir / "results.json", _jsonable(results))
    atomic_write_text(run_dir / "report.md", report)


def load_results(path: Path | str) -> dict[str, Any]:
    """Read and validate ``results.json`` (or the one inside a run folder). Raises ``DataError`` when unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"results file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {first_line(err)}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a results document")
    data = upgrade_legacy(data)
    try:
        validate_results(data)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    return data


def upgrade_legacy(results: Mapping[str, Any]) -> dict[str, Any]:
    """A results document with the current key names: rows' ``<metric>_ci95`` become ``<metric>_ci`` and get
    ``confidence`` (the document's ``config.eval.confidence``, else 0.95); comparisons' ``ci95`` becomes ``ci`` and
    the old percentile ``p_value`` heuristic is kept as ``legacy_bootstrap_p``. Current documents come back equal."""
    doc = dict(results)
    level = 0.95
    cfg = doc.get("config")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("eval"), Mapping) and cfg["eval"].get("confidence"):
        level = float(cfg["eval"]["confidence"])
    rows = []
    for row in doc.get("rows") or []:
        row = dict(row) if isinstance(row, Mapping) else row
        if isinstance(row, dict):
            for metric in ("accuracy", "macro_f1"):
                if f"{metric}_ci95" in row and f"{metric}_ci" not in row:
                    row[f"{metric}_ci"] = row.pop(f"{metric}_ci95")
                    row.setdefault("confidence", level)
        rows.append(row)
    comps = []
    for comp in doc.get("comparisons") or []:
        comp = dict(comp) if isinstance(comp, Mapping) else comp
        if isinstance(comp, dict) and "ci95" in comp and "ci" not in comp:
            comp["ci"] = comp.pop("ci95")
            comp.setdefault("confidence", level)
            if "p_value" in comp:
                comp["legacy_bootstrap_p"] = comp.pop("p_value")
        comps.append(comp)
    if "rows" in doc:
        doc["rows"] = rows
    if "comparisons" in doc:
        doc["comparisons"] = comps
    return doc


def ci_level(doc: dict) -> str:
    """``"95% CI"`` for a document whose ``settings.confidence`` is 0.95."""
    return f"{doc['settings']['confidence'] * 100:g}% CI"


def value_with_ci(value: float | None, ci: Sequence[float] | None = None) -> str:
    """``0.861 [0.845, 0.874]``; ``—`` for no value."""
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
