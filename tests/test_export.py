"""export: torch-int8 / onnx / onnx-int8 of a tiny canonical classifier, reloaded through runtime.load_classifier."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tokenizer, make_rows

TFNS_TO_NAME = {0: "negative", 1: "positive", 2: "neutral"}


def save_canonical_classifier(folder: Path) -> Path:
    """A random 2-layer BERT classifier with id2label negative/neutral/positive (what a student looks like).

    The head is scaled up so class margins are wide enough for int8 noise not to flip most argmaxes.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, "encoder")
    torch.manual_seed(5)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                     num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
                     label2id={"negative": 0, "neutral": 1, "positive": 2})
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    return save_canonical_classifier(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "eval.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i, (text, label) in enumerate(make_rows(48, 11)):
            writer.writerow([text, TFNS_TO_NAME[label] if i % 2 else {"negative": 0, "neutral": 1,
                                                                        "positive": 2}[TFNS_TO_NAME[label]]])
    return path


@pytest.fixture(scope="module")
def exported(student_dir, eval_csv, tmp_path_factory) -> tuple[Path, dict]:
    from findistill.deploy.export import export

    out = tmp_path_factory.mktemp("exports") / "student-export"
    return out, export(student_dir, out, eval_file=eval_csv, max_length=32)


def test_export_writes_every_variant_and_a_report(exported):
    out, report = exported
    for variant in ("torch-int8", "onnx", "onnx-int8"):
        marker = json.loads((out / variant / "findistill_export.json").read_text())
        assert marker["variant"] == variant and marker["source"] and marker["created"]
        assert (out / variant / "config.json").is_file() and (out / variant / "tokenizer.json").is_file()
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx-int8" / "model.onnx").is_file()
    assert (out / "torch-int8" / "quantized_state_dict.pt").is_file()
    saved = json.loads((out / "export_report.json").read_text())
    assert list(saved["variants"]) == ["fp32", "torch-int8", "onnx", "onnx-int8"]
    for row in saved["variants"].values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1
        assert row["agreement_with_fp32"] >= 0.8 and row["size_mb"] > 0 and row["examples_per_s"] > 0
    assert saved["variants"]["fp32"]["agreement_with_fp32"] == 1.0
    assert saved["variants"]["onnx"]["max_abs_logit_diff"] < 1e-4
    assert saved["eval"]["n"] == 48 and report["eval"]["n"] == 48
    table = (out / "export_report.md").read_text()
    assert "| onnx-int8 |" in table and "macro-F1" in table
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_variants_load_and_agree(exported, student_dir):
    from findistill.deploy.runtime import load_classifier

    out, _ = exported
    texts = [t for t, _ in make_rows(40, 3)] + ["", "ok", "a much longer text " * 30]
    ref = load_classifier(student_dir, max_length=32)
    assert ref.variant == "fp32" and ref.labels == ["negative", "neutral", "positive"]
    ref_logits = ref.predict_logits(texts, batch_size=7)
    ref_labels = ref_logits.argmax(1)
    for variant in ("torch-int8", "onnx", "onnx-int8"):
        clf = load_classifier(out / variant)
        assert clf.variant == variant and clf.labels == ref.labels and clf.max_length == 32
        probs = clf.predict_proba(texts, batch_size=7)
        assert probs.shape == (len(texts), 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
        assert np.mean(probs.argmax(1) == ref_labels) >= 0.8, variant
        if variant == "onnx":
            np.testing.assert_allclose(clf.predict_logits(texts, batch_size=64), ref_logits, atol=1e-4)
    rows = load_classifier(out / "onnx").classify(texts[:2])
    assert set(rows[0]) == {"label", "probs"} and set(rows[0]["probs"]) == set(ref.labels)


def test_onnx_runs_several_batches_at_once_with_the_same_logits(exported):
    from findistill.deploy.runtime import load_classifier

    out, _ = exported
    texts = [t for t, _ in make_rows(30, 8)] + ["", "a much longer text " * 30]
    serial = load_classifier(out / "onnx", threads=1)
    parallel = load_classifier(out / "onnx", threads=2)
    assert serial.parallel is None and parallel.parallel[1] == 2
    one_batch = parallel.predict_logits(texts[:4], batch_size=4)
    assert parallel.parallel[0]._session is None  # one batch: the intra-op session; the second one is not made
    np.testing.assert_allclose(one_batch, serial.predict_logits(texts[:4], batch_size=4), atol=1e-5)
    np.testing.assert_allclose(parallel.predict_logits(texts, batch_size=3),
                               serial.predict_logits(texts, batch_size=3), atol=1e-5)
    assert parallel.parallel[0]._session is not None  # several batches ran on the single-threaded session


def test_batching_and_order_do_not_change_results(student_dir):
    from findistill.deploy.runtime import load_classifier

    clf = load_classifier(student_dir)
    texts = [t for t, _ in make_rows(20, 4)]
    one_by_one = np.vstack([clf.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(clf.predict_proba(texts, batch_size=6), one_by_one, atol=1e-5)
    assert clf.predict_proba([]).shape == (0, 3)


def test_bad_folders_raise_one_line_model_errors(tmp_path, exported):
    from findistill.errors import ModelError
    from findistill.deploy.runtime import load_classifier

    out, _ = exported
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "findistill_export.json").write_text('{"variant": "fp16"}')
    for folder, needle in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "no config.json"),
                           (out, "pass one of its variants"), (tmp_path / "bad", "variant")):
        with pytest.raises(ModelError, match=needle) as err:
            load_classifier(folder)
        assert "\n" not in str(err.value)


def test_failed_export_leaves_nothing(tmp_path, student_dir, monkeypatch):
    import findistill.deploy.export as ex
    from findistill.errors import ModelError

    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")
    with pytest.raises(ModelError, match="not a findistill export"):
        ex.export(student_dir, out, variants=["torch-int8"])
    (out / "export_report.json").write_text("{}")

    def boom(*args, **kwargs):
        raise ModelError("simulated failure")

    monkeypatch.setattr(ex, "_quantize_onnx", boom)
    with pytest.raises(ModelError, match="simulated"):
        ex.export(student_dir, out, variants=["torch-int8", "onnx-int8"])
    assert [p.name for p in tmp_path.iterdir()] == ["exp"] and (out / "keep.txt").read_text() == "previous export"


def test_cli_errors_exit_2(tmp_path, student_dir, capsys):
    from findistill.deploy.export import main

    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,bullish\n")
    assert main([str(student_dir), "--out", str(tmp_path / "o"), "--eval-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("findistill: error:") and "bullish" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
