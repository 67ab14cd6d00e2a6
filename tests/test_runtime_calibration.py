"""A student folder's calibration.json (the dev-fitted temperature of `findistill analyze`) reaches the
probabilities `predict` and `serve` print, and export carries it into every variant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from findistill.config import StudentConfig
from findistill.errors import ModelError
from findistill.deploy.runtime import load_classifier, softmax
from findistill.models.student import build_student, save_student

TEXTS = ["$AAPL soars on strong earnings", "Tesla shares fall sharply", "the bank files quarterly report"]


@pytest.fixture()
def student_dir(tmp_path, tiny_bert_dir):
    model, tok = build_student(StudentConfig(model=str(tiny_bert_dir), method="full"))
    return save_student(model, tok, tmp_path / "student")


def test_probabilities_use_the_fitted_temperature(student_dir):
    plain = load_classifier(student_dir)
    logits = plain.predict_logits(TEXTS)
    np.testing.assert_allclose(plain.predict_proba(TEXTS), softmax(logits), rtol=1e-5)
    (student_dir / "calibration.json").write_text(json.dumps({"temperature": 2.5, "fitted_on": "dev"}))
    calibrated = load_classifier(student_dir)
    np.testing.assert_allclose(calibrated.predict_logits(TEXTS), logits, rtol=1e-5)  # raw logits unchanged
    np.testing.assert_allclose(calibrated.predict_proba(TEXTS), softmax(logits / 2.5), rtol=1e-5)


def test_a_bad_temperature_is_one_line(student_dir):
    (student_dir / "calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ModelError, match="temperature must be a positive number"):
        load_classifier(student_dir)


def test_export_copies_the_calibration_into_each_variant(tmp_path, student_dir):
    from findistill.deploy.export import export

    (student_dir / "calibration.json").write_text(json.dumps({"temperature": 1.7}))
    export(student_dir, tmp_path / "export", variants=["onnx-int8"], max_length=24)
    for variant in ("onnx", "onnx-int8"):
        assert json.loads((tmp_path / "export" / variant / "calibration.json").read_text())["temperature"] == 1.7
        assert load_classifier(tmp_path / "export" / variant).temperature == 1.7
