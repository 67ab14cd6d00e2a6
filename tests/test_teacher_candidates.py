"""benchmarks/teacher_candidates.py: fine-tuned teachers and their ensemble scored on dev and validation, chosen on dev."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import load_benchmark

pytestmark = pytest.mark.slow  # a benchmark script end to end


def test_candidates_and_their_ensemble_are_scored_and_chosen_on_dev(tmp_path, tiny_bert_classifier_dir,
                                                                     tiny_tfns_dir, monkeypatch):
    import shutil

    from findistill.config import TeacherConfig
    from findistill.teachers import ClassifierTeacher

    bench = load_benchmark("teacher_candidates")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"dev_fraction": 0.2}, "eval": {"bootstrap_samples": 100},
                                      "teacher": {"batch_size": 8, "max_length": 24}}))
    # two "fine-tuned teachers": the same random classifier saved with canonical names, and a perturbed copy
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_bert_classifier_dir, a)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(a)
    model.config.id2label = {0: "negative", 1: "positive", 2: "neutral"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(a)
    with __import__("torch").no_grad():
        model.classifier.bias += __import__("torch").tensor([2.0, 0.0, 0.0])
    model.save_pretrained(b)
    out = tmp_path / "out"
    common = ["--config", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir), "--cache-dir",
              str(tmp_path / "cache")]
    assert bench.main(common + ["--candidate", f"a={a}", "--candidate", f"b={b}"]) == 0
    assert bench.main(common + ["--candidate", f"ens={a}+{b}"]) == 0  # merged into the same table
    results = json.loads((out / "results.json").read_text())
    assert set(results["candidates"]) == {"a", "b", "ens"} and len(results["commands"]) == 2
    dev = {n: c["dev"]["macro_f1"] for n, c in results["candidates"].items()}
    assert results["chosen"] == max(dev, key=dev.get)
    # the ensemble is the mean of the members' probabilities: its dev scores are those of that mean
    from findistill.data.splits import load_splits
    from findistill.config import load_config
    from findistill.evaluation.metrics import classification_metrics

    splits = load_splits(load_config(config).data, str(tiny_tfns_dir))
    probs = []
    for folder in (a, b):
        t = ClassifierTeacher(TeacherConfig(kind="classifier", model=str(folder), batch_size=8, max_length=24))
        logits = t.class_logits(splits.dev.texts, progress=False)
        probs.append(np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = classification_metrics(np.asarray(splits.dev.labels), np.mean(probs, axis=0).argmax(1))
    assert results["candidates"]["ens"]["dev"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert "| candidate |" in (out / "report.md").read_text()
    # every member folder's logits are cached: scored again, alone or in another ensemble, it is read, not run
    def no_inference(self, texts, progress=True):
        raise AssertionError("the teacher ran although its logits were cached")

    monkeypatch.setattr(ClassifierTeacher, "class_logits", no_inference)
    assert bench.main(common + ["--candidate", f"a_again={a}", "--candidate", f"ens_again={b}+{a}"]) == 0
    again = json.loads((out / "results.json").read_text())["candidates"]
    assert again["a_again"]["dev"] == {**again["a"]["dev"], "seconds": again["a_again"]["dev"]["seconds"]}
    assert again["ens_again"]["dev"]["macro_f1"] == pytest.approx(again["ens"]["dev"]["macro_f1"])
