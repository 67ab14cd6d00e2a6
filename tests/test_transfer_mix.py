"""benchmarks/transfer_mix.py: mixes of the same size drawn from one labelled union of sources, and the report."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import load_benchmark, make_rows


def test_mixes_have_the_same_total_and_a_short_source_gives_its_share_to_the_others():
    bench = load_benchmark("transfer_mix")
    sources = ["t"] * 50 + ["h"] * 30 + ["r"] * 4
    both = bench.draw_mix(sources, ["t", "r"], 20, seed=0)
    assert len(both) == 20 and sum(sources[i] == "r" for i in both) == 4  # r had 4 of its 10: t gives 16
    three = bench.draw_mix(sources, ["t", "h", "r"], 21, seed=0)
    assert len(three) == 21 and sum(sources[i] == "r" for i in three) == 4
    assert bench.draw_mix(sources, ["t", "h"], 20, seed=0) == bench.draw_mix(sources, ["t", "h"], 20, seed=0)
    assert bench.draw_mix(sources, ["t", "h"], 20, seed=0) != bench.draw_mix(sources, ["t", "h"], 20, seed=1)
    assert bench.draw_mix(sources, None, 5, seed=0) == list(range(len(sources)))
    with pytest.raises(SystemExit, match="no transfer source named"):
        bench.draw_mix(sources, ["posts"], 5, seed=0)


@pytest.mark.slow
def test_transfer_mix_cells_and_report(tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, tiny_tfns_dir):
    bench = load_benchmark("transfer_mix")
    files = {}
    for name, n in (("tweets", 14), ("headlines", 10), ("report_sentences", 8)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(f"{name} {t}" for t, _ in make_rows(n, hash(name) % 97)) + "\n")
    config = {"name": "tiny-mix",
              "data": {"dev_fraction": 0.2, "transfer_holdout": 2,
                       "transfer_files": [{"path": str(p), "name": n} for n, p in files.items()]},
              "teacher": {"kind": "classifier", "model": str(tiny_bert_classifier_dir), "name": "tiny-teacher",
                          "batch_size": 16, "max_length": 24, "health_gate": False,
                          "label_map": {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}},
              "student": {"model": str(tiny_bert_dir), "name": "tiny-student", "method": "full", "max_length": 24},
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2,
                        "selection": "steps", "selection_steps": 4},
              "eval": {"bootstrap_samples": 100}}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    out, runs = tmp_path / "out", tmp_path / "runs"
    common = ["--config", str(path), "--out", str(out), "--run-dir", str(runs), "--data-dir", str(tiny_tfns_dir),
              "--sizes", "1", "--seeds", "1", "--total", "6"]
    assert bench.main(common + ["--mixes", "ce,tweets,all_three"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["mix"]: r for r in results["rows"]}
    assert set(rows) == {"ce", "tweets", "all_three"}
    assert rows["tweets"]["per_seed"][0]["transfer_texts"] == rows["all_three"]["per_seed"][0]["transfer_texts"] == 6
    assert rows["ce"]["per_seed"][0]["transfer_texts"] == 0
    assert set(rows["tweets"]["fidelity"]) == {"tweets", "headlines", "report_sentences"}
    assert results["best_on_dev"]["1"] in {"tweets", "all_three"}
    # a second invocation resumes: finished cells are not trained again, and its command joins the list
    assert bench.main(common + ["--mixes", "tweets,all_uncapped"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["mix"] for r in results["rows"]} == {"ce", "tweets", "all_three", "all_uncapped"}
    assert len(results["commands"]) == 2 and "agreement tweets" in (out / "report.md").read_text()
    uncapped = next(r for r in results["rows"] if r["mix"] == "all_uncapped")
    assert uncapped["per_seed"][0]["transfer_texts"] == (14 - 2) + (10 - 2) + (8 - 2)
    status = {t["target"]: t["status"] for t in results["target_status"]}
    assert status and all(s == "not measured" for s in status.values())  # a 1-layer run says nothing of L2's targets
    assert "## Targets (issue 25)" in (out / "report.md").read_text()


def _row(mix, dev, acc, ci, fid, seeds=(42, 43, 44)):
    return {"size": 2, "mix": mix, "seeds": list(seeds), "dev_macro_f1_mean": dev, "accuracy_mean": acc,
            "per_seed": [{"seed": s, "accuracy_ci": ci} for s in seeds],
            "fidelity": {s: {"agreement_mean": a} for s, a in zip(("tweets", "headlines", "report_sentences"), fid)}}


def test_targets_compare_the_dev_best_mix_with_tweets_only():
    bench = load_benchmark("transfer_mix")
    rows = [_row("tweets", 0.80, 0.870, [0.856, 0.884], (0.96, 0.90, 0.93)),
            _row("all_three", 0.81, 0.860, [0.846, 0.874], (0.955, 0.951, 0.97)),
            _row("ce", 0.70, 0.85, [0.83, 0.86], (0.9, 0.8, 0.8))]
    bench.compare_to_reference(rows)
    assert "vs_reference" not in rows[0] and "vs_reference" not in rows[2]
    assert rows[1]["vs_reference"]["fidelity_points"]["headlines"] == pytest.approx(5.1)
    results = {"rows": rows, "best_on_dev": {"2": "all_three"}}
    status = [t["status"] for t in bench.check_targets(results)]
    # every style >= 0.95; headlines +5.1 met; report sentences +4.0 met; 0.860 >= 0.856 met
    assert status == ["met", "met", "met", "met"]
    rows[1]["fidelity"]["report_sentences"]["agreement_mean"] = 0.94  # below 0.95, and only +1.0 over tweets
    rows[1]["accuracy_mean"] = 0.85  # below the tweets-only CI
    bench.compare_to_reference(rows)
    assert [t["status"] for t in bench.check_targets(results)] == ["missed", "met", "missed", "missed"]
    for r in rows:
        r["seeds"], r["per_seed"] = [42], r["per_seed"][:1]
    assert [t["status"] for t in bench.check_targets(results)][1] == "provisional (met on 1 seed of 3)"
