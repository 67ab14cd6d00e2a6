"""A Hugging Face model card (``README.md`` with a YAML header) for a student saved by `findistill run`.

The header carries ``license``, ``datasets``, ``metrics``, ``base_model`` (when known) and ``model-index`` results;
the body: intended use, training data, teacher, distillation settings, evaluation with CIs, the slice, calibration,
entity-swap and probe findings of :mod:`findistill.analysis.analyze`, limitations and how to load it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from findistill.config import LABELS, RunConfig
from findistill.evaluation.report import fidelity_rows, ci_level, value_with_ci, render_comparisons, teacher_check_lines

_MIN_SLICE = 30  # slices smaller than this are not named as findings
_ROLE_TEXT = {"student_distilled": "distilled from the teacher (KD + CE)",
              "student_ce": "trained on gold labels only (CE), the comparison for the distilled student"}


def _base_model(ref: str) -> tuple[str | None, str]:
    """(hub id of the base model or None, licence identifier) of the student's ``student.model`` reference."""
    from findistill.models.refs import OFFLINE_MODELS

    entry = OFFLINE_MODELS.get(ref)
    if entry is not None:
        hub = re.search(r"\(([\w.-]+/[\w.-]+)", entry["licence"])
        licence = "apache-2.0" if entry["licence"].lower().startswith("apache-2.0") else "other"
        return (hub.group(1) if hub else None), licence
    if Path(ref).exists():
        return None, "other"
    return (ref if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) else None), "other"


def _dataset_id(cfg: RunConfig) -> str | None:
    data = cfg.data
    if data.train_file or data.eval_file or Path(data.source).exists():
        return None
    return data.source if re.fullmatch(r"[\w.-]+/[\w.-]+", data.source) else None


def render_header(role: str, cfg: RunConfig, results: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML header as a dict (``yaml.safe_dump`` of it opens the card)."""
    row = next(r for r in results["rows"] if r["role"] == role)
    base, licence = _base_model(cfg.student.model)
    dataset = _dataset_id(cfg)
    info = results.get("dataset", {})
    header: dict[str, Any] = {"license": licence, "language": ["en"], "library_name": "transformers",
                              "pipeline_tag": "text-classification",
                              "tags": ["financial-sentiment", "knowledge-distillation", "findistill"]}
    if base:
        header["base_model"] = base
    if dataset:
        header["datasets"] = [dataset]
    header["metrics"] = ["accuracy", "f1"]
    header["model-index"] = [{
        "name": f"{cfg.name}-{role}",
        "results": [{
            "task": {"type": "text-classification", "name": "Financial sentiment (negative, neutral, positive)"},
            "dataset": {"name": str(info.get("name") or dataset or "evaluation file"),
                        "type": dataset or "custom", "split": str(info.get("split") or "validation")},
            "metrics": [
                {"type": "accuracy", "value": round(row["accuracy"], 4), "name": "Accuracy"},
                {"type": "f1", "value": round(row["macro_f1"], 4), "name": "Macro-F1", "args": {"average": "macro"}},
            ],
        }],
    }]
    return header


def _slice_lines(role: str, doc: Mapping[str, Any]) -> list[str]:
    rows = [r for r in doc["slices"]["rows"].get(role, []) if r["n"]]
    overall = next(r for r in rows if r["slice"] == "all")["accuracy"]
    named = sorted((r for r in rows if r["slice"] != "all" and r["n"] >= _MIN_SLICE), key=lambda r: r["accuracy"])
    lines = [f"Accuracy on all {doc['eval']['n']:,} evaluation tweets: {overall:.3f}. Per slice (n ≥ {_MIN_SLICE}), "
             "worst first:", "", f"| slice | n | accuracy [{ci_level(doc)}] | macro-F1 |", "|---|---:|---:|---:|"]
    lines += [f"| {r['slice']} ({doc['slices']['definitions'][r['slice']]}) | {r['n']} | "
              f"{value_with_ci(r['accuracy'], r['accuracy_ci'])} | {r['macro_f1']:.3f} |" for r in named]
    below = [r["slice"] for r in named if r["accuracy_ci"][1] < overall]
    lines += ["", "Slices whose whole interval lies below the overall accuracy: " + (", ".join(below) or "none") + "."]
    return lines


def render_model_card(role: str, cfg: RunConfig, results: Mapping[str, Any], doc: Mapping[str, Any]) -> str:
    """The model card of the student with ``role`` (student_distilled or student_ce) of a finished run."""
    rows = {r["role"]: r for r in results["rows"]}
    row, teacher = rows[role], rows.get("teacher")
    info = results.get("dataset", {})
    train, st = cfg.train, cfg.student
    header = yaml.safe_dump(render_header(role, cfg, results), sort_keys=False, allow_unicode=True)
    lines = ["---", header.rstrip("\n"), "---", "",
             f"# {row['name']}: financial-sentiment classifier ({cfg.name})", "",
             f"A three-class sentiment classifier ({', '.join(LABELS)}) for short financial news and tweets, "
             f"{_ROLE_TEXT[role]}, produced by findistill from the config `{cfg.name}`.", ""]
    if results.get("warnings"):
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in results["warnings"]] + [""]
    lines += ["## Intended use", "",
             "Scoring the sentiment of English financial headlines and tweets in bulk, as one signal among others, "
             "with a person reviewing decisions. It is not investment advice and must not drive trades on its own. "
             "It was trained and evaluated on short English texts like those of its training data only.", "",
             "## Training data", "",
             f"`{info.get('name', cfg.data.source)}`: {info.get('n_train', '?'):,} training texts, a seeded stratified "
             f"dev split of {info.get('n_dev', '?'):,} texts carved from train (checkpoint and temperature "
             f"selection), evaluation on the `{info.get('split', '?')}` split ({info.get('n', '?'):,} texts, used "
             "for nothing else).", ""]
    if isinstance(results.get("transfer_sources"), Mapping) and role == "student_distilled":
        lines += ["Unlabelled transfer texts the teacher labelled (the KD term only), by source:", ""]
        lines += [f"- `{name}`: {s.get('kept', 0):,} of {s.get('read', 0):,} texts; the teacher called them "
                  + ", ".join(f"{c} {s.get('teacher_labels', {}).get(c, 0):,}" for c in LABELS)
                  for name, s in results["transfer_sources"].items()] + [""]
    if isinstance(results.get("fidelity"), Mapping) and (fid_rows := fidelity_rows(results["fidelity"], [role])):
        lines += ["How much of the teacher this model keeps on held-out text of each transfer source (no labels "
                  "needed; agreement with the teacher's class, and the mean KL from teacher to student):", ""]
        lines += [f"- `{r[0]}` ({r[1]} texts): agreement {r[4]}, mean KL {r[5]}" for r in fid_rows] + [""]
    if row.get("train_examples"):
        lines += [f"The student saw {row['train_examples']:,} training texts for {row.get('train_steps', '?')} "
                  f"optimizer steps ({row.get('train_wall_time_s', '?')} s).", ""]
    lines += ["## Teacher", ""]
    if teacher is not None:
        lines += [f"{teacher['name']} ({cfg.teacher.kind}): accuracy "
                  f"{value_with_ci(teacher['accuracy'], teacher['accuracy_ci'])}, macro-F1 "
                  f"{value_with_ci(teacher['macro_f1'], teacher['macro_f1_ci'])} on the same evaluation split.", ""]
    else:
        lines += [f"{cfg.teacher.display_name} ({cfg.teacher.kind}); not evaluated in this run.", ""]
    if isinstance(results.get("teacher_check"), Mapping):
        lines += teacher_check_lines(results["teacher_check"])[2:] + [""]
    lines += ["## Distillation settings", "",
              f"- student: `{st.display_name}`, {st.method}"
              + (f" (LoRA r={st.lora.r}, alpha={st.lora.alpha}, merged)" if st.method == "lora" else "")
              + f", max_length {st.max_length}",
              (f"- loss: alpha·T²·KL(teacher ‖ student) + (1 − alpha)·CE, T = {train.temperature}, alpha = "
               f"{train.alpha}" if role == "student_distilled" else "- loss: CE on gold labels"),
              f"- {train.epochs} epochs, learning rate {train.learning_rate}, batch {train.batch_size}, "
              f"{train.lr_scheduler} schedule, checkpoint selection: {train.selection} ({train.selection_metric} on dev)",
              "", "## Evaluation", "",
              f"On `{info.get('split', '?')}` ({row['n']:,} texts); percentile-bootstrap intervals.", "",
              f"| model | role | accuracy [{ci_level(doc)}] | macro-F1 [{ci_level(doc)}] |", "|---|---|---:|---:|"]
    lines += [f"| {r['name']} | {r['role']} | {value_with_ci(r['accuracy'], r['accuracy_ci'])} | "
              f"{value_with_ci(r['macro_f1'], r['macro_f1_ci'])} |" for r in results["rows"]]
    comps = [c for c in results.get("comparisons", []) if role in (c.get("a"), c.get("b"))]
    if comps:
        lines += ["", "Paired comparisons:", "", render_comparisons(comps).rstrip("\n")]
    lines += ["", "### Slices", ""] + _slice_lines(role, doc)
    cal = doc["calibration"].get(role, {})
    lines += ["", "### Calibration", "", f"Expected calibration error ({doc['settings']['n_bins']} bins) on the "
              f"evaluation split: {value_with_ci(cal.get('ece'))}."]
    if cal.get("temperature") is not None:
        lines[-1] += (f" A temperature T = {cal['temperature']:.3f} fitted on {cal['dev_examples']} dev texts (never "
                      f"the evaluation split) gives {value_with_ci(cal.get('ece_after'))}; it is stored in `calibration.json`: "
                      "calibrated probabilities are `softmax(logits / T)`.")
    swap = doc["entity_swap"]["models"]
    if role in swap:
        s = swap[role]
        text = (f"On {s['n']} evaluation tweets whose company names and cashtags were replaced by other companies, "
                f"the predicted class flipped on {s['flips']} ({value_with_ci(s['flip_rate'], s['flip_rate_ci'])})")
        if "teacher" in swap:
            text += f"; the teacher's flip rate is {value_with_ci(swap['teacher']['flip_rate'], swap['teacher']['flip_rate_ci'])}"
        top = [e["entity"] for e in doc["entity_swap"].get("by_inserted", []) if e["flips"].get(role)][:5]
        lines += ["", "### Entity swap", "", text + "." + (f" Inserted entities that flip it most: {', '.join(top)}."
                                                            if top else "")]
    probes = doc["probes"]["models"].get(role)
    if probes:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in probes["by_kind"].items())
        lines += ["", "### Negation and hedging probes", "",
                  f"{len({p['pair'] for p in doc['probes']['items']})} hand-written minimal pairs "
                  f"({doc['probes']['n']} texts): accuracy {probes['accuracy']:.3f}, both texts of a pair right "
                  f"{probes['pair_accuracy']:.3f}; by kind: {kinds}."]
    lines += ["", "## Limitations", "",
              "- English financial tweets and headlines only; long documents are cut at "
              f"{st.max_length} tokens.",
              "- Three coarse classes; sarcasm, mixed news and market-specific jargon are often misread.",
              "- It inherits the teacher's and the annotators' biases; the entity-swap and slice numbers above show "
              "where, on this evaluation split only. Errors are not evenly spread over slices. The entity swap "
              "replaces every cashtag but only the company names on findistill's list.",
              "- The confidence intervals describe resampling of this evaluation split, not other data or time "
              "periods; news language drifts.",
              "", "## How to use", "", "```python", "from transformers import pipeline",
              'clf = pipeline("text-classification", model="PATH_TO_THIS_FOLDER")',
              'clf("Shares of $XYZ plunge after the company cuts its outlook")', "```", "",
              "The pipeline's scores are the uncalibrated softmax; for calibrated probabilities divide the logits by "
              "the `temperature` in `calibration.json` first (`findistill predict` and `serve` do this).", ""]
    return "\n".join(lines)
