"""The augmentation ablation benchmark end to end on tiny random models: three run folders, one shared budget,
one shared cache folder, paired comparisons against KD alone, and the filter's counts in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import load_benchmark

pytestmark = pytest.mark.slow  # a benchmark script end to end


def _load():
    return load_benchmark("augment_ablation")


def _meta(run: Path) -> dict:
    from findistill.evaluation.prediction import Prediction

    return Prediction.load(run / "predictions" / "student_distilled.npz").meta


def test_ablation_runs_three_variants_at_one_budget(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_tfns_dir):
    config = {
        "name": "tiny-ablation",
        "data": {"dev_fraction": 0.2},
        "teacher": {"kind": "prompted_lm", "model": str(tiny_llama_dir), "name": "tiny-llama", "batch_size": 8,
                    "health_gate": False},  # a random teacher
        "student": {"model": str(tiny_bert_dir), "name": "tiny-bert", "method": "full", "max_length": 24},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        # the random teacher's labels are noise, so the consistency check drops a random share: both outcomes count
        "augment": {"num_paraphrases": 1, "max_new_tokens": 8, "batch_size": 8, "drop_bad_length": False},
        "eval": {"bootstrap_samples": 200},
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    bench, out, runs = _load(), tmp_path / "out", tmp_path / "runs"
    assert bench.main(["--config", str(path), "--out", str(out), "--run-dir", str(runs),
                       "--data-dir", str(tiny_tfns_dir)]) == 0

    results = json.loads((out / "results.json").read_text())
    n_train = results["dataset"]["n_train"]
    steps = results["budget_steps"]
    assert steps == 2 * -(-n_train // 8)
    unfiltered, filtered = results["augmentation_unfiltered"], results["augmentation"]
    assert unfiltered["generated"] == filtered["generated"] == n_train
    assert filtered["kept"] <= unfiltered["kept"]
    assert unfiltered["kept"] + unfiltered["dropped"]["empty"] == n_train  # unfiltered: only empty outputs go
    expected_examples = {"kd": n_train, "kd_unfiltered": n_train + unfiltered["kept"],
                         "kd_filtered": n_train + filtered["kept"]}
    for folder, n in expected_examples.items():
        meta = _meta(runs / folder)
        assert meta["train_steps"] == steps, f"{folder} trains at the shared budget"
        assert meta["train_examples"] == n
    # One shared cache folder (cache.dir), nothing copied between run folders: the filtered run read the unfiltered
    # run's paraphrase file (one file, one line per source text plus its header) instead of generating again.
    shared = runs / "cache"
    [paraphrases] = shared.glob("paraphrases-*.jsonl")
    assert len(paraphrases.read_text().splitlines()) == 1 + n_train
    assert list(shared.glob("*.safetensors"))
    for folder in expected_examples:
        assert not (runs / folder / "cache").exists() and not list((runs / folder).glob("augment/paraphrases-*"))

    rows = results["rows"]
    assert [r["role"] for r in rows].count("student_distilled") == 3 and len({r["name"] for r in rows}) == len(rows)
    assert {"majority", "teacher", "student_ce"} <= {r["role"] for r in rows}
    pairs = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert {("kd_unfiltered", "kd", "accuracy"), ("kd_filtered", "kd", "macro_f1"),
            ("student_distilled", "student_ce", "accuracy")} <= pairs
    report = (out / "report.md").read_text()
    assert "## The filter" in report and "python benchmarks/augment_ablation.py" in report
    assert f"{filtered['generated']} generated, {filtered['kept']} kept" in report


def test_budget_steps_counts_optimizer_steps():
    from findistill.config import TrainConfig

    bench = _load()
    assert bench.budget_steps(100, TrainConfig(epochs=2, batch_size=16)) == 14
    assert bench.budget_steps(100, TrainConfig(epochs=1, batch_size=16, gradient_accumulation_steps=2)) == 4
    assert bench.budget_steps(100, TrainConfig(max_steps=9)) == 9
