"""Teacher LoRA fine-tuning on tiny random models: both methods save folders the teachers read, the verbalizer
fine-tune learns a toy signal, the CLI stage and `findistill run` use the tuned teacher, and the TFNS benchmark
script runs end to end on a tiny config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import load_benchmark, make_rows
from findistill.config import LABELS, LoraSettings, TeacherConfig, TeacherFinetuneConfig
from findistill.data.splits import TextSplit
from findistill.teachers import ClassifierTeacher, PromptedLMTeacher
from findistill.training.teacher_finetune import SUMMARY_FILE, finetune_teacher, label_word_class_logits

REPO = Path(__file__).resolve().parents[1]
_TFNS_TO_CANONICAL = {0: 0, 1: 2, 2: 1}  # Bearish, Bullish, Neutral -> negative, positive, neutral
# Label words that are single, distinct tokens of the tiny tokenizer in every variant the verbalizer tries
# (" word", "word", capitalised); the toy texts end with their class's word, learnable from the last token.
WORDS = {"negative": "Tweet", "neutral": "Classify", "positive": "Sentiment"}


def toy_split(n: int, seed: int, name: str) -> TextSplit:
    rows = [(t, _TFNS_TO_CANONICAL[y]) for t, y in make_rows(n, seed)]
    return TextSplit(name, [f"{t} {WORDS[LABELS[y]]}" for t, y in rows], [y for _, y in rows])


def teacher_cfg(model: Path, method: str = "verbalizer", epochs: float = 1, lr: float = 2e-2) -> TeacherConfig:
    ft = TeacherFinetuneConfig(enabled=True, method=method, epochs=epochs, learning_rate=lr, batch_size=8,
                               lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    return TeacherConfig(model=str(model), name="tiny-llama", prompt="{text}", use_chat_template=False,
                         verbalizer={k: [w] for k, w in WORDS.items()}, batch_size=16, finetune=ft)


@pytest.fixture(scope="module")
def verbalizer_run(tiny_llama_dir, tmp_path_factory):
    cfg = teacher_cfg(tiny_llama_dir, epochs=2)
    train, dev = toy_split(48, 1, "train"), toy_split(24, 2, "dev")
    out = tmp_path_factory.mktemp("ft") / "teacher"
    summary = finetune_teacher(cfg, train, dev, out, seed=0)
    return cfg, dev, out, summary


def test_verbalizer_finetune_learns_and_saves_a_prompted_teacher(verbalizer_run, tiny_llama_dir):
    cfg, dev, out, summary = verbalizer_run
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("adapter_*")), "LoRA must be merged"
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert [h["epoch"] for h in summary["history"]] == [1.0, 2.0]
    assert summary["best_epoch"] in (1.0, 2.0) and summary["trainable_params"] < summary["total_params"]
    assert summary["best"]["macro_f1"] == max(h["macro_f1"] for h in summary["history"])

    before = PromptedLMTeacher(cfg)
    tuned = PromptedLMTeacher(teacher_cfg(out))
    old, new = before.class_logits(dev.texts, progress=False), tuned.class_logits(dev.texts, progress=False)
    assert new.shape == (len(dev), 3) and new.dtype == np.float32
    assert not np.allclose(old, new, atol=1e-3), "fine-tuning must change the teacher's logits"
    acc = lambda logits: float(np.mean(logits.argmax(1) == np.asarray(dev.labels)))  # noqa: E731
    assert acc(old) == pytest.approx(summary["dev_before"]["accuracy"])
    # The saved teacher reads dev exactly as the best epoch was scored during training.
    assert acc(new) == pytest.approx(summary["best"]["accuracy"])
    assert acc(new) >= acc(old) + 0.2, (acc(old), acc(new))


def test_training_reduction_equals_the_teachers_read(tiny_llama_dir):
    cfg = teacher_cfg(tiny_llama_dir)
    teacher = PromptedLMTeacher(cfg)
    texts = toy_split(6, 3, "x").texts
    batch = teacher.pad([teacher.encode(t) for t in texts])
    with torch.no_grad():
        last = teacher.model(**batch, use_cache=False).logits[:, -1, :]  # [B, V]
    ours = label_word_class_logits(last, teacher.label_token_ids).numpy()
    np.testing.assert_allclose(ours, teacher.class_logits(texts, progress=False), rtol=1e-5, atol=1e-5)


def test_head_finetune_saves_a_canonical_classifier(tiny_llama_dir, tmp_path):
    cfg = teacher_cfg(tiny_llama_dir, method="head")
    train, dev = toy_split(32, 1, "train"), toy_split(12, 2, "dev")
    summary = finetune_teacher(cfg, train, dev, tmp_path / "teacher", seed=0)
    assert len(summary["history"]) == 1 and summary["method"] == "head"
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["pad_token_id"] is not None
    teacher = ClassifierTeacher(TeacherConfig(kind="classifier", model=str(tmp_path / "teacher")))
    logits = teacher.class_logits(dev.texts, progress=False)
    assert logits.shape == (len(dev), 3)
    acc = float(np.mean(logits.argmax(1) == np.asarray(dev.labels)))
    assert acc == pytest.approx(summary["best"]["accuracy"])


def test_full_finetune_of_a_classifier_teacher_trains_every_weight(tiny_bert_dir, tmp_path):
    """An encoder classifier teacher (kind classifier, parameters full): all weights train, no peft in the folder."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    ft = TeacherFinetuneConfig(enabled=True, method="head", parameters="full", epochs=2, learning_rate=5e-3,
                               batch_size=8)
    cfg = TeacherConfig(kind="classifier", model=str(tiny_bert_dir), name="tiny-bert", batch_size=16, max_length=24,
                        finetune=ft)
    train, dev = toy_split(40, 1, "train"), toy_split(12, 2, "dev")
    summary = finetune_teacher(cfg, train, dev, tmp_path / "teacher", seed=0)
    assert summary["parameters"] == "full" and summary["lora"] is None
    assert summary["trainable_params"] == summary["total_params"] and len(summary["history"]) == 2
    assert not (tmp_path / "teacher" / "adapter_config.json").exists()
    tuned = load_file(str(tmp_path / "teacher" / "model.safetensors"))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).state_dict()
    changed = [k for k, v in tuned.items() if k in base and "embeddings" not in k and not torch.equal(v, base[k])]
    assert any("encoder.layer.0" in k for k in changed)  # the encoder itself moved, not only the head
    logits = ClassifierTeacher(TeacherConfig(kind="classifier", model=str(tmp_path / "teacher"))).class_logits(
        dev.texts, progress=False)
    assert float(np.mean(logits.argmax(1) == np.asarray(dev.labels))) == pytest.approx(summary["best"]["accuracy"])


def test_full_parameters_need_the_head_method():
    from findistill.config import ConfigError

    with pytest.raises(ConfigError, match="parameters"):
        TeacherFinetuneConfig(method="verbalizer", parameters="full")


def test_max_train_examples_subsamples_and_bad_kind_is_one_line(tiny_llama_dir, tmp_path):
    from findistill.errors import ModelError

    cfg = teacher_cfg(tiny_llama_dir)
    cfg.finetune.max_train_examples = 9
    summary = finetune_teacher(cfg, toy_split(30, 1, "train"), toy_split(6, 2, "dev"), tmp_path / "t", seed=1)
    assert summary["train_examples"] == 9 and sum(summary["train_label_counts"].values()) == 9
    with pytest.raises(ModelError) as err:
        finetune_teacher(TeacherConfig(kind="classifier", model=str(tiny_llama_dir)), toy_split(6, 1, "t"),
                         toy_split(6, 2, "d"), tmp_path / "x")
    assert "\n" not in str(err.value)


def write_config(path: Path, teacher_dir: Path, student_dir: Path, **sections) -> Path:
    config = {
        "name": "tiny-ft",
        "data": {"dev_fraction": 0.2},
        "teacher": {"kind": "prompted_lm", "model": str(teacher_dir), "name": "tiny-llama", "batch_size": 8,
                    "health_gate": False,  # a tiny teacher tuned for one epoch: the gate would stop it
                    "finetune": {"enabled": True, "epochs": 1, "learning_rate": 1e-2, "batch_size": 8,
                                 "lora": {"r": 4, "alpha": 8}}},
        "student": {"model": str(student_dir), "name": "tiny-bert", "method": "full", "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        "eval": {"bootstrap_samples": 200},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(config))
    return path


def _load_benchmark():
    return load_benchmark("tfns_full")


def test_cli_finetune_run_and_tfns_benchmark_use_the_tuned_teacher(tmp_path, tiny_llama_dir, tiny_bert_dir,
                                                                    tiny_tfns_dir):
    """`findistill teacher-finetune`, then `findistill run` (reuses it), then the benchmark script on that run."""
    from findistill.__main__ import main

    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bert_dir)
    out = tmp_path / "run"
    args = [str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir)]
    assert main(["teacher-finetune", *args]) == 0
    summary = json.loads((out / "teacher" / SUMMARY_FILE).read_text())
    assert summary["dev_examples"] > 0 and summary["history"]
    stamp = (out / "teacher" / "model.safetensors").stat().st_mtime_ns
    assert main(["run", *args]) == 0
    assert (out / "teacher" / "model.safetensors").stat().st_mtime_ns == stamp, "the tuned teacher is reused"
    rows = {r["role"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert "fine-tuned" in rows["teacher"]["name"]

    # The benchmark drives the same pipeline (here: every stage already done) plus the prompted rows.
    bench, bench_out = _load_benchmark(), tmp_path / "bench"
    assert bench.main(["--config", str(config), "--out", str(bench_out), "--run-dir", str(out),
                       "--data-dir", str(tiny_tfns_dir), "--few-shot", "2"]) == 0
    results = json.loads((bench_out / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert len(names) == 7 and len(set(names)) == 7
    assert [r["role"] for r in results["rows"]].count("teacher") == 3
    assert any("zero-shot" in n for n in names) and any("2-shot" in n for n in names)
    tuned = next(r for r in results["rows"] if "fine-tuned" in r["name"])
    assert tuned["train_wall_time_s"] == summary["train_wall_time_s"]
    for row in results["rows"]:
        assert "train_wall_time_s" in row and "examples_per_s" in row and "params" in row
    pairs = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert {("student_distilled", "student_ce", "accuracy"), ("teacher", "student_ce", "accuracy")} <= pairs
    assert {"machine", "command", "created", "targets"} <= set(results)
    assert len(results["targets"]) == 3 and all(t["status"] in ("met", "missed") for t in results["targets"])
    report = (bench_out / "report.md").read_text()
    assert "## Targets" in report and "python benchmarks/tfns_full.py" in report and "torch" in report
    assert bench.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(bench_out)]) == 2


def test_finetune_seed_makes_another_teacher_and_keeps_old_keys(tmp_path, tiny_llama_dir, tiny_bert_dir,
                                                                 tiny_tfns_dir):
    """teacher.finetune.seed: null fine-tunes with data.seed under the keys made before the key existed; another seed
    is another teacher (its own fine-tune and label keys, its own weights)."""
    from findistill.__main__ import main
    from findistill.config import load_config
    from findistill.pipeline.stages import stage_key

    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bert_dir)
    base = load_config(config)
    data = {"train": "t", "dev": "d", "eval": "e", "transfer": None}
    seeded = load_config(config, {"teacher.finetune.seed": 7})
    for stage in ("teacher_finetune", "label"):
        assert stage_key(seeded, data, stage) != stage_key(base, data, stage)
    runs = {}
    for name, extra in (("default", []), ("seed7", ["--set", "teacher.finetune.seed=7"])):
        out = tmp_path / name
        assert main(["teacher-finetune", str(config), "--out", str(out), "--data-dir", str(tiny_tfns_dir),
                     *extra]) == 0
        runs[name] = json.loads((out / "teacher" / SUMMARY_FILE).read_text())
    assert runs["default"]["seed"] == base.data.seed and runs["seed7"]["seed"] == 7
    assert runs["default"]["history"] != runs["seed7"]["history"]  # another head, another batch order


def test_self_training_labels_transfer_texts_with_round_0_and_dev_keeps_the_better_round(tiny_bert_dir, tmp_path):
    from findistill.config import SelfTrainingSettings
    from findistill.errors import DataError

    st = SelfTrainingSettings(enabled=True, min_confidence=0.34, max_texts=10)
    ft = TeacherFinetuneConfig(enabled=True, method="head", parameters="full", epochs=1, learning_rate=5e-3,
                               batch_size=8, self_training=st)
    cfg = TeacherConfig(kind="classifier", model=str(tiny_bert_dir), name="tiny-bert", batch_size=16, max_length=24,
                        finetune=ft)
    train, dev = toy_split(40, 1, "train"), toy_split(12, 2, "dev")
    transfer = TextSplit("transfer", toy_split(30, 3, "t").texts, [-1] * 30)
    with pytest.raises(DataError, match="self_training needs unlabelled transfer texts"):
        finetune_teacher(cfg, train, dev, tmp_path / "none", seed=0)
    out = tmp_path / "teacher"
    summary = finetune_teacher(cfg, train, dev, out, seed=0, transfer=transfer)
    s = summary["self_training"]
    assert s["transfer_texts"] == 30 and s["pseudo_texts"] == 10 and sum(s["pseudo_label_counts"].values()) == 10
    rounds = s["rounds"]
    assert [r["train_examples"] for r in rounds] == [40, 50]  # round 1: gold + the confident transfer texts
    better = max((0, 1), key=lambda k: (rounds[k]["best"]["macro_f1"], -k))  # ties: round 0
    assert s["kept_round"] == better
    # the saved teacher is the kept round: its dev accuracy is that round's best epoch's
    logits = ClassifierTeacher(TeacherConfig(kind="classifier", model=str(out))).class_logits(dev.texts,
                                                                                                  progress=False)
    assert float(np.mean(logits.argmax(1) == np.asarray(dev.labels))) == pytest.approx(
        rounds[better]["best"]["accuracy"])
    assert json.loads((out / SUMMARY_FILE).read_text())["self_training"]["kept_round"] == better
    assert not list(tmp_path.glob(".teacher.round*"))  # the other round is gone, nothing half-written is left
    strict = dataclasses.replace(cfg, finetune=dataclasses.replace(ft, self_training=SelfTrainingSettings(
        enabled=True, min_confidence=0.999)))
    with pytest.raises(DataError, match="min_confidence"):  # a random tiny teacher is never that sure
        finetune_teacher(strict, train, dev, tmp_path / "strict", seed=0, transfer=transfer)


def test_self_training_keys_the_fine_tune_on_the_transfer_texts_only_when_on(tmp_path, tiny_llama_dir, tiny_bert_dir):
    from findistill.config import load_config
    from findistill.pipeline.stages import stage_key

    config = write_config(tmp_path / "c.yaml", tiny_llama_dir, tiny_bert_dir)
    off, on = load_config(config), load_config(config, {"teacher.finetune.self_training.enabled": True})
    data = {"train": "t", "dev": "d", "eval": "e", "transfer": "x"}
    other = {**data, "transfer": "y"}
    assert stage_key(off, data, "teacher_finetune") == stage_key(off, other, "teacher_finetune")
    assert stage_key(on, data, "teacher_finetune") != stage_key(on, other, "teacher_finetune")
    assert stage_key(on, data, "teacher_finetune") != stage_key(off, data, "teacher_finetune")
