"""``report.html``: one self-contained page (inline CSS, plots as base64 PNG, no script, no network) of a run's
results and its analysis (:mod:`findistill.analysis.analyze`). Plots are drawn with matplotlib's Agg backend."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping, Sequence

import numpy as np

from findistill.config import LABELS
from findistill.evaluation.report import FIDELITY_HEADER, FIDELITY_NOTE, fidelity_rows, ci_level, value_with_ci, human_params, render_comparisons, teacher_check_lines

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
img{max-width:100%;height:auto;display:block;margin:.6rem 0}.note{color:#555;font-size:.9rem}
"""


def _role_names(doc: Mapping[str, Any]) -> dict[str, str]:
    return {m["role"]: m["name"] for m in doc["models"]}


# --------------------------------------------------------------------------------------------- figures


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _errors(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Error-bar lengths; a percentile interval may miss its point estimate, so they are clipped at 0."""
    return [np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)]


def _confusion_figure(doc: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    names = _role_names(doc)
    roles = list(doc["confusion_matrices"])
    fig, axes = plt.subplots(1, len(roles), figsize=(3.3 * len(roles), 3.2), squeeze=False)
    for ax, role in zip(axes[0], roles):
        cm = np.asarray(doc["confusion_matrices"][role])
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(LABELS)), [name[:3] for name in LABELS])
        ax.set_yticks(range(len(LABELS)), [name[:3] for name in LABELS])
        ax.set_xlabel("predicted")
        ax.set_title(names[role][:32], fontsize=9)
    axes[0][0].set_ylabel("true")
    return _png(fig)


def _reliability_figure(doc: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    names = _role_names(doc)
    roles = list(doc["calibration"])
    fig, axes = plt.subplots(1, len(roles), figsize=(3.3 * len(roles), 3.3), squeeze=False)
    for ax, role in zip(axes[0], roles):
        cal = doc["calibration"][role]
        edges = np.asarray(cal["bins"]["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = [np.nan if a is None else a for a in cal["bins"]["accuracy"]]
        ax.bar(centers, acc, width=width * 0.9, color="#4c72b0", alpha=0.75, label=f"ECE {cal['ece']:.3f}")
        if cal.get("bins_after"):
            after = [np.nan if a is None else a for a in cal["bins_after"]["accuracy"]]
            ax.plot(centers, after, "o-", color="#dd8452", ms=3,
                    label=f"T={cal['temperature']:.2f}: ECE {cal['ece_after']:.3f}")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(names[role][:32], fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("accuracy")
    return _png(fig)


def _slice_figure(doc: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    names = _role_names(doc)
    slices = list(doc["slices"]["definitions"])
    roles = list(doc["slices"]["rows"])
    fig, ax = plt.subplots(figsize=(9, 0.14 * len(slices) * max(1, len(roles)) + 1.2))
    height = 0.8 / max(1, len(roles))
    for k, role in enumerate(roles):
        rows = {r["slice"]: r for r in doc["slices"]["rows"][role]}
        ys = np.arange(len(slices)) + k * height
        acc = np.array([rows[s].get("accuracy", np.nan) for s in slices], dtype=float)
        lo = np.array([rows[s]["accuracy_ci"][0] if rows[s]["n"] else np.nan for s in slices], dtype=float)
        hi = np.array([rows[s]["accuracy_ci"][1] if rows[s]["n"] else np.nan for s in slices], dtype=float)
        ax.barh(ys, acc, height=height, xerr=_errors(acc, lo, hi), capsize=2, label=names[role][:40])
    sizes = doc["slices"]["sizes"]
    ax.set_yticks(np.arange(len(slices)) + 0.4 - height / 2, [f"{s} (n={sizes[s]})" for s in slices])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"accuracy ({ci_level(doc)}, bootstrap)")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _training_figure(logs: Mapping[str, Sequence[Mapping[str, Any]]], doc: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    names = _role_names(doc)
    fig, axes = plt.subplots(1, len(logs), figsize=(5 * len(logs), 3.3), squeeze=False)
    for ax, (role, history) in zip(axes[0], logs.items()):
        for key, style in (("loss", "-"), ("kd_loss", "--"), ("ce_loss", ":")):
            points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
            if points:
                ax.plot(*zip(*points), style, label=key)
        evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
        if evals:
            ax.plot(*zip(*evals), "o", label="eval_loss (dev)")
        ax.set_xlabel("step")
        ax.set_title(names.get(role, role)[:40], fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    return _png(fig)


def _swap_figure(doc: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    names = _role_names(doc)
    models = doc["entity_swap"]["models"]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(models) + 1))
    rates = np.array([m["flip_rate"] for m in models.values()])
    lo = np.array([m["flip_rate_ci"][0] for m in models.values()])
    hi = np.array([m["flip_rate_ci"][1] for m in models.values()])
    ax.barh(range(len(models)), rates, xerr=_errors(rates, lo, hi), capsize=3, color="#c44e52")
    ax.set_yticks(range(len(models)), [names[r][:40] for r in models])
    ax.set_xlim(0, max(0.05, 1.15 * float(np.max(hi))))
    ax.invert_yaxis()
    ax.set_xlabel(f"share of {doc['entity_swap']['n']} entity-swapped tweets whose predicted class flips")
    return _png(fig)


def render_figures(doc: Mapping[str, Any], training_logs: Mapping[str, Sequence[Mapping[str, Any]]]
                   ) -> dict[str, bytes]:
    """PNG bytes per figure name: confusion, reliability, slices, and training / entity_swap when there is data."""
    import matplotlib

    matplotlib.use("Agg")
    figures = {"confusion": _confusion_figure(doc), "reliability": _reliability_figure(doc),
               "slices": _slice_figure(doc)}
    logs = {role: history for role, history in training_logs.items() if history}
    if logs:
        figures["training"] = _training_figure(logs, doc)
    if doc["entity_swap"]["models"]:
        figures["entity_swap"] = _swap_figure(doc)
    return figures


# --------------------------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1, table_id: str = "") -> str:
    attr = f' id="{table_id}"' if table_id else ""
    out = [f"<table{attr}><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f'<td{" class=n" if i >= numeric_from else ""}>{_e(c)}</td>' for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _img(figures: Mapping[str, bytes], name: str, alt: str) -> str:
    data = base64.b64encode(figures[name]).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _results_section(doc: Mapping[str, Any], results: Mapping[str, Any]) -> list[str]:
    cal = doc["calibration"]
    rows = []
    for r in results["rows"]:
        c = cal.get(r["role"], {})
        agree = r.get("agreement_with_teacher")
        rows.append([r["name"], r["role"], human_params(r.get("params")), value_with_ci(r["accuracy"], r.get("accuracy_ci")),
                     value_with_ci(r["macro_f1"], r.get("macro_f1_ci")), "—" if agree is None else f"{agree:.3f}",
                     value_with_ci(c.get("ece")), "—" if c.get("temperature") is None else f"{c['temperature']:.2f}",
                     value_with_ci(c.get("ece_after"))])
    out = ["<h2>Results</h2>",
           _table(["model", "role", "params", f"accuracy [{ci_level(doc)}]", f"macro-F1 [{ci_level(doc)}]",
                   "agreement with teacher", "ECE", "temperature (dev)", "ECE after T"], rows, numeric_from=2,
                  table_id="results"),
           f'<p class="note">{doc["eval"]["n"]:,} evaluation texts ({_e(doc["eval"]["split"])}); percentile '
           f'bootstrap intervals ({ci_level(doc)}, {doc["settings"]["bootstrap_samples"]} resamples). ECE: '
           f'{doc["settings"]["n_bins"]} equal-width confidence bins on the evaluation split; the temperature is '
           "fitted on the dev split.</p>"]
    comps = results.get("comparisons") or []
    if comps:
        lines = render_comparisons(comps).splitlines()
        out.append("<p>Paired comparisons:</p><ul>" + "".join(f"<li>{_e(line[2:])}</li>" for line in lines) + "</ul>")
    return out


def _slices_section(doc: Mapping[str, Any], figures: Mapping[str, bytes]) -> list[str]:
    names = _role_names(doc)
    roles = list(doc["slices"]["rows"])
    by_role = {role: {r["slice"]: r for r in doc["slices"]["rows"][role]} for role in roles}
    rows = []
    for name, definition in doc["slices"]["definitions"].items():
        cells = [by_role[r][name] for r in roles]
        rows.append([name, definition, doc["slices"]["sizes"][name]]
                    + [f"{value_with_ci(c['accuracy'], c['accuracy_ci'])} · F1 {c['macro_f1']:.3f}" if c["n"] else "—"
                       for c in cells])
    return ["<h2>Slices</h2>", _img(figures, "slices", "accuracy per slice"),
            f"<p>Per model: accuracy [{ci_level(doc)}] · macro-F1.</p>",
            _table(["slice", "definition", "n"] + [names[r] for r in roles], rows, numeric_from=2)]


def _swap_section(doc: Mapping[str, Any], figures: Mapping[str, bytes]) -> list[str]:
    swap, names = doc["entity_swap"], _role_names(doc)
    out = ["<h2>Counterfactual entity swap</h2>",
           f"<p>{swap['n']} evaluation tweets mentioning a company (cashtag or name) were rewritten with other "
           "companies from the list (the same sentence, <code>$AAPL</code> → <code>$XOM</code>, Apple → Exxon). "
           "A name or ticker should not carry sentiment: every flip is a bias.</p>"]
    if not swap["models"]:
        return out + ["<p>No model could be run on the swapped tweets.</p>"]
    out.append(_img(figures, "entity_swap", "flip rate under entity swap"))
    roles = list(swap["models"])
    out.append(_table(["model", "swapped tweets", "flips", f"flip rate [{ci_level(doc)}]"],
                      [[names[r], m["n"], m["flips"], value_with_ci(m["flip_rate"], m["flip_rate_ci"])]
                       for r, m in swap["models"].items()]))
    for key, title in (("by_inserted", "Most-flipping inserted entities"), ("by_replaced", "Most-flipping replaced "
                                                                                          "entities")):
        top = [e for e in swap.get(key, []) if sum(e["flips"].values())][:10]
        if top:
            out.append(f"<h3>{title}</h3>")
            out.append(_table(["entity", "swaps"] + [f"flips: {names[r]}" for r in roles],
                              [[e["entity"], e["swaps"]] + [e["flips"][r] for r in roles] for e in top]))
    if swap["examples"]:
        out.append("<h3>Flipped examples</h3>")
        out.append(_table(["original", "swapped"] + [f"{names[r]}: before → after" for r in roles],
                          [[ex["original"], ex["swapped"]] + [" → ".join(ex["predicted"][r]) for r in roles]
                           for ex in swap["examples"]], numeric_from=99))
    return out


def _probes_section(doc: Mapping[str, Any]) -> list[str]:
    probes, names = doc["probes"], _role_names(doc)
    if not probes["models"]:
        return []
    roles = list(probes["models"])
    kinds = list(dict.fromkeys(p["kind"] for p in probes["items"]))
    rows = [[names[r], f"{m['accuracy']:.3f}", f"{m['pair_accuracy']:.3f}"] + [f"{m['by_kind'][k]:.3f}" for k in kinds]
            for r, m in probes["models"].items()]
    items = [[p["pair"], p["text"], p["label"]] + [probes["models"][r]["predicted"][i] for r in roles]
             for i, p in enumerate(probes["items"])]
    return ["<h2>Negation and hedging probes</h2>",
            f"<p>{len({p['pair'] for p in probes['items']})} hand-written minimal pairs ({probes['n']} texts: "
            "polarity, negation, hedging, neutral vs. charged) with expected labels; a pair counts when both of its "
            "texts are right. A hedge keeps the direction of the plain statement.</p>",
            _table(["model", "accuracy", "pair accuracy"] + kinds, rows),
            "<details><summary>every probe</summary>",
            _table(["pair", "text", "expected"] + [names[r] for r in roles], items, numeric_from=99), "</details>"]


def _teacher_student_section(doc: Mapping[str, Any]) -> list[str]:
    ts = doc.get("teacher_student")
    if not ts:
        return []
    names = _role_names(doc)
    student = names[ts["student"]]
    rows = {r["slice"]: r for r in doc["slices"]["rows"][ts["student"]]}
    out = ["<h2>Teacher and student</h2>",
           f"<p>{_e(student)} agrees with the teacher on {ts['agreement']:.3f} of the evaluation tweets.</p>",
           _table(["slice", "n", "agreement with teacher"],
                  [[s, r["n"], value_with_ci(r.get("agreement_with_teacher"))] for s, r in rows.items()])]
    titles = {"teacher_right": "Teacher right, student wrong", "student_right": "Student right, teacher wrong",
              "both_wrong": "Both wrong, and different"}
    for kind, examples in ts["disagreements"].items():
        out.append(f"<h3>{titles[kind]} ({len(examples)} largest disagreements)</h3>")
        if examples:
            out.append(_table(["text", "gold", "teacher", "student", "teacher probs (neg, neu, pos)",
                               "student probs", "TV distance"],
                              [[e["text"], e["gold"], e["teacher"], e["student"], e["teacher_probs"],
                                e["student_probs"], f"{e['distance']:.3f}"] for e in examples], numeric_from=6))
    return out


def render_html(doc: Mapping[str, Any], figures: Mapping[str, bytes], results: Mapping[str, Any]) -> str:
    """The report page: results table, confusion matrices, calibration, slices, training curves, entity swap,
    probes and teacher–student disagreements."""
    title = (doc.get("run") or {}).get("name") or (doc.get("model") or {}).get("folder") or "analysis"
    body = [f"<h1>findistill report: {_e(title)}</h1>"]
    if results.get("warnings"):
        body += ['<h2 id="warnings">Warnings</h2><ul class="warnings">'
                 + "".join(f"<li><strong>{_e(w)}</strong></li>" for w in results["warnings"]) + "</ul>"]
    body += _results_section(doc, results)
    if isinstance(results.get("teacher_check"), Mapping):
        heading, _, text = teacher_check_lines(results["teacher_check"])
        body += [f"<h2>{_e(heading[3:])}</h2>", f'<p id="teacher-check">{_e(text)}</p>']
    if isinstance(results.get("transfer_sources"), Mapping):
        body += ["<h2>Transfer texts by source</h2>",
                 _table(["source", "read", "kept", *[f"teacher: {c}" for c in LABELS]],
                        [[name, f"{s.get('read', 0):,}", f"{s.get('kept', 0):,}",
                          *[f"{s.get('teacher_labels', {}).get(c, 0):,}" for c in LABELS]]
                         for name, s in results["transfer_sources"].items()], table_id="transfer-sources")]
    if isinstance(results.get("fidelity"), Mapping):
        body += ["<h2>Fidelity per source (held-out transfer texts)</h2>", f"<p>{_e(FIDELITY_NOTE)}</p>",
                 _table(FIDELITY_HEADER, fidelity_rows(results["fidelity"]), numeric_from=4, table_id="fidelity")]
    body += ["<h2>Confusion matrices</h2>", "<p>Rows: true class, columns: predicted.</p>",
             _img(figures, "confusion", "confusion matrices")]
    body += ["<h2>Calibration</h2>",
             "<p>Reliability diagrams: accuracy per confidence bin (bars) against the diagonal, and after dividing "
             "the logits by the temperature fitted on the dev split (line).</p>",
             _img(figures, "reliability", "reliability diagrams")]
    body += _slices_section(doc, figures)
    if "training" in figures:
        body += ["<h2>Training curves</h2>", "<p>Logged loss, KD and CE parts per step.</p>",
                 _img(figures, "training", "training curves")]
    body += _swap_section(doc, figures)
    body += _probes_section(doc)
    body += _teacher_student_section(doc)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>findistill report: {_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
