"""The analyze stage and the ``findistill analyze`` command: :mod:`findistill.analysis` applied to a finished run
folder (its predictions, its cached teacher logits, its students), or to one saved classifier on a labelled file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from findistill.analysis.analyze import (ROLE_ORDER, STUDENT_FOLDERS, ExtraLogits, ModelSpec, analyze,
                                         hf_extra_logits, write_calibration, write_outputs)
from findistill.data.splits import TextSplit
from findistill.io import atomic_write_text

log = logging.getLogger(__name__)


def _training_logs(run_dir: Path) -> dict[str, list[dict]]:
    logs = {}
    for role, folder in STUDENT_FOLDERS.items():
        path = run_dir / folder / "training_log.json"
        if path.is_file():
            logs[role] = json.loads(path.read_text(encoding="utf-8"))
    return logs


def analyze_run(run: Any) -> dict[str, Any] | None:
    """Analyse the finished run folder of ``run`` (a :class:`~findistill.pipeline.runner.Run`): ``analysis/``,
    ``report.html``, the students' ``calibration.json`` and model cards. The teacher is loaded only if its logits are
    not cached. Returns the analysis document (None when there are no predictions)."""
    from findistill.analysis import html_report, model_card
    from findistill.evaluation.prediction import Prediction
    from findistill.evaluation.report import load_results

    out, cfg = run.out, run.config
    preds = {role: Prediction.load(run.prediction_path(role)) for role in ROLE_ORDER
             if run.prediction_path(role).is_file()}
    if not preds:
        log.info("[analyze] no predictions in %s; nothing to analyse", out)
        return None
    results = load_results(out)
    max_length, batch_size = cfg.student.max_length, cfg.train.eval_batch_size
    specs = []
    for role, p in preds.items():
        extra: ExtraLogits | None = None
        if role == "teacher":
            def extra(texts_by_purpose: dict[str, list[str]]) -> dict[str, np.ndarray]:
                return {purpose: run.teacher_logits(TextSplit(f"analysis_{purpose}", texts, [-1] * len(texts)))
                        for purpose, texts in texts_by_purpose.items()}
        elif role in STUDENT_FOLDERS and (out / STUDENT_FOLDERS[role] / "config.json").is_file():
            extra = hf_extra_logits(out / STUDENT_FOLDERS[role], max_length, batch_size)
        specs.append(ModelSpec(role, p.name, p.logits, extra))
    student_role = next((r for r in ("student_distilled", "student_ce") if r in preds), None)
    doc = analyze(specs, run.splits.eval, run.splits.dev, cfg.eval, seed=cfg.data.seed, student_role=student_role)
    doc["run"] = {"name": cfg.name, "folder": str(out)}
    for role, folder in STUDENT_FOLDERS.items():
        if doc["calibration"].get(role, {}).get("temperature") is not None:
            write_calibration(out / folder, doc["calibration"][role])
    figures = html_report.render_figures(doc, _training_logs(out))
    write_outputs(out / "analysis", doc, figures)
    atomic_write_text(out / "report.html", html_report.render_html(doc, figures, results))
    for role, folder in STUDENT_FOLDERS.items():
        if role in preds and (out / folder / "config.json").is_file():
            atomic_write_text(out / folder / "README.md", model_card.render_model_card(role, cfg, results, doc))
    print(f"analysis: {out / 'report.html'}")
    return doc
