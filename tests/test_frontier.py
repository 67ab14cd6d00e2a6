"""The frontier benchmark end to end on tiny random models: teacher, transfer set, cells per size / variant / seed,
matched compute, resumption, the per-seed paired comparisons, timing and the report."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from conftest import load_benchmark, make_rows

pytestmark = pytest.mark.slow  # a benchmark script end to end


def _write_config(tmp_path, teacher_dir, student_dir, n_transfer: int, cross_fit_folds: int = 0):
    """A tiny frontier config (teacher fine-tuned in full, transfer tweets with topic labels that must be ignored)."""
    transfer = tmp_path / "topic.csv"
    with open(transfer, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([(f"{text} https://t.co/{i}", 5) for i, (text, _) in enumerate(make_rows(n_transfer, 9))])
    config = {
        "name": "tiny-frontier",
        "data": {"dev_fraction": 0.2, "transfer_files": [{"path": str(transfer), "name": "topic"}],
                 "transfer_holdout": 4},
        "teacher": {"kind": "classifier", "model": str(teacher_dir), "name": "tiny-teacher",
                    "batch_size": 16, "max_length": 24, "health_gate": False,  # a tiny random teacher
                    "finetune": {"enabled": True, "method": "head", "parameters": "full", "epochs": 1,
                                 "learning_rate": 1e-3, "cross_fit_folds": cross_fit_folds}},
        "student": {"model": str(student_dir), "name": "tiny-bert", "method": "full", "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2, "selection": "steps",
                  "selection_steps": 3},
        "eval": {"bootstrap_samples": 200},
    }
    path = tmp_path / "frontier.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_frontier_cells_resume_and_report(tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, tiny_tfns_dir):
    path = _write_config(tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, 40)
    bench, out, runs = load_benchmark("frontier"), tmp_path / "out", tmp_path / "runs"
    common = ["--config", str(path), "--out", str(out), "--run-dir", str(runs), "--data-dir", str(tiny_tfns_dir),
              "--sizes", "1", "--seeds", "2"]
    assert bench.main(common + ["--variants", "ce,kd_transfer,ce_matched", "--transfer-epochs", "2"]) == 0
    cells = {p.parent.name: json.loads(p.read_text()) for p in (runs / "cells").glob("*/cell.json")}
    assert set(cells) == {f"L1_{v}_s{s}" for v in ("ce", "kd_transfer_te2", "ce_matched_te2") for s in (42, 43)}
    results = json.loads((out / "results.json").read_text())
    n_train, n_transfer = results["dataset"]["n_train"], results["dataset"]["n_transfer"]
    assert 0 < n_transfer <= 40
    kd, matched, ce = cells["L1_kd_transfer_te2_s42"], cells["L1_ce_matched_te2_s42"], cells["L1_ce_s42"]
    assert kd["train_examples"] == n_train + n_transfer and ce["train_examples"] == matched["train_examples"] == n_train
    assert kd["train_steps"] == matched["train_steps"] == 2 * -(-(n_train + n_transfer) // 8)  # matched compute
    assert ce["train_steps"] == -(-n_train // 8)
    rows = {(r["size"], r["variant"]): r for r in results["frontier"]}
    assert rows[(1, "kd_transfer_te2")]["seeds"] == [42, 43] and rows[(1, "kd_transfer_te2")]["accuracy_sd"] is not None
    # CE-only over the gold texts' epochs and at the distilled student's steps are both CE-only rows: dev picks one
    base = results["dev_choice"]["1"]["ce"]
    other = {"ce": "ce_matched_te2", "ce_matched_te2": "ce"}[base]
    assert cells[f"L1_{base}_s42"]["selected_dev_metric"] >= cells[f"L1_{other}_s42"]["selected_dev_metric"]
    assert results["dev_choice"]["1"]["distilled"] == "kd_transfer_te2"
    assert sorted((c["a"], c["b"], c["seed"]) for c in results["comparisons"]) == [
        ("kd_transfer_te2", base, 42), ("kd_transfer_te2", base, 43)]
    assert sorted((c["a"], c["b"], c["seed"]) for c in results["controls"]) == [
        ("kd_transfer_te2", other, 42), ("kd_transfer_te2", other, 43)]  # the other one, same seed
    assert {r["role"] for r in results["reference_rows"]} == {"majority", "teacher"}
    assert "## Gains over CE-only" in (out / "report.md").read_text()
    ft = json.loads((out / "results.json").read_text())["teacher_finetune"]  # the teacher as dev saw it, per epoch
    assert ft["epochs"] == 1 and [h["epoch"] for h in ft["history"]] == [1.0] and ft["best_epoch"] == 1.0
    assert "| epoch | dev accuracy | dev macro-F1 |" in (out / "report.md").read_text()
    curve = json.loads((out / "training_logs" / "L1_ce_s42.json").read_text())
    assert [e["step"] for e in curve if "eval_macro_f1" in e][-1] == ce["train_steps"]  # the dev curve, to the end

    # Resumes cell by cell: finished cells are not trained again, a new variant is added beside them.
    before = {name: (runs / "cells" / name / "cell.json").stat().st_mtime_ns for name in cells}
    assert bench.main(common + ["--variants", "ce,kd,kd_transfer", "--seeds", "1"]) == 0
    assert {name: (runs / "cells" / name / "cell.json").stat().st_mtime_ns for name in cells} == before
    assert (runs / "cells" / "L1_kd_s42" / "cell.json").is_file()
    one_epoch = json.loads((runs / "cells" / "L1_kd_transfer_s42" / "cell.json").read_text())  # a row of its own
    assert one_epoch["train_steps"] == -(-(n_train + n_transfer) // 8) and one_epoch["transfer_epochs"] == 1.0
    rows = {(r["size"], r["variant"]): r for r in json.loads((out / "results.json").read_text())["frontier"]}
    assert {"kd_transfer", "kd_transfer_te2", "ce_matched_te2", "kd", "ce"} == {v for _, v in rows}
    controls = {(c["a"], c["b"], c["seed"]) for c in json.loads((out / "results.json").read_text())["controls"]}
    assert {("kd_transfer_te2", "kd", 42), ("kd_transfer", "kd", 42)} <= controls
    assert "## Controls of the distilled students" in (out / "report.md").read_text()

    # Another learning rate is a row of its own, and the gains are taken against the CE-only row dev prefers.
    assert bench.main(common + ["--variants", "ce", "--seeds", "1", "--learning-rate", "1e-9"]) == 0
    slow = json.loads((runs / "cells" / "L1_ce_lr1e-09_s42" / "cell.json").read_text())
    assert slow["learning_rate"] == slow["trained_learning_rate"] == 1e-9 and slow["label"] == "ce_lr1e-09"
    results = json.loads((out / "results.json").read_text())
    # the grid seed's dev score chooses (one seed per grid point; more seeds at the chosen rate cannot flip it)
    dev = {label: json.loads((runs / "cells" / f"L1_{label}_s42" / "cell.json").read_text())["selected_dev_metric"]
           for label in ("ce", "ce_lr1e-09", "ce_matched_te2")}
    baseline = results["ce_baselines"]["1"]
    assert dev[baseline] == max(dev.values()) and "L1 `" + baseline + "`" in (out / "report.md").read_text()
    # the distilled row is chosen by the same rule: the best grid-seed dev score among the distilled rows
    kd_dev = {cell["label"]: cell["selected_dev_metric"] for path in (runs / "cells").glob("L1_kd*_s42/cell.json")
              if (cell := json.loads(path.read_text()))}
    chosen = results["dev_choice"]["1"]
    assert chosen["ce"] == baseline and chosen["distilled"] == max(kd_dev, key=kd_dev.get)
    assert "Selection rule:" in (out / "report.md").read_text()
    grid = {g["row"]: g for g in results["grid"] if g["size"] == 1}
    assert grid["ce_lr1e-09"]["learning_rate"] == 1e-9 and {r for r, g in grid.items() if g["chosen"]} == set(chosen.values())
    # every row's students on the held-out transfer texts: agreement with the teacher and KL, per source
    fid = {(f["size"], f["variant"], f["source"]): f for f in results["fidelity"]}
    assert (1, "ce", "topic") in fid and fid[(1, "ce", "topic")]["n"] == 4
    assert all(0 <= f["agreement_mean"] <= 1 and f["mean_kl"] >= 0 for f in fid.values())
    assert "## Fidelity per transfer source" in (out / "report.md").read_text()
    # CE-only at matched steps is a control at any learning rate it ran (the tuned CE-only row's rate, say), and a
    # training length of the CE-only kind: a candidate for the CE-only row dev chooses, like another rate
    assert bench.main(common + ["--variants", "ce_matched", "--seeds", "1", "--transfer-epochs", "2",
                                "--learning-rate", "1e-9"]) == 0
    results = json.loads((out / "results.json").read_text())
    ce_dev = {cell["label"]: cell["selected_dev_metric"] for path in (runs / "cells").glob("L1_ce*_s42/cell.json")
              if (cell := json.loads(path.read_text()))}
    assert set(ce_dev) == {"ce", "ce_lr1e-09", "ce_matched_te2", "ce_matched_te2_lr1e-09"}
    assert {g["row"] for g in results["grid"] if g["size"] == 1 and g["kind"] == "ce"} == set(ce_dev)
    baseline = results["dev_choice"]["1"]["ce"]
    assert ce_dev[baseline] == max(ce_dev.values()) and results["ce_baselines"]["1"] == baseline
    assert results["dev_choice"]["1"]["distilled"] == chosen["distilled"]
    # every distilled row, and no CE-only row, is compared with the chosen CE-only row
    assert {(c["a"], c["b"]) for c in results["comparisons"]} == {(kd, baseline) for kd in kd_dev}
    # each CE-only row dev did not pick is a control of the distilled row dev chose (once), and the CE-only rows
    # of the other distilled rows are only their matched-step twins
    for seed in (42, 43):
        pairs = [(c["a"], c["b"]) for c in results["controls"] if c["seed"] == seed]
        assert len(pairs) == len(set(pairs))
    against = {(c["a"], c["b"]) for c in results["controls"] if c["b"] in ce_dev and c["seed"] == 42}
    assert {b for a, b in against if a == chosen["distilled"]} == set(ce_dev) - {baseline}
    assert all(b.startswith("ce_matched_te2") for a, b in against if a != chosen["distilled"])
    if chosen["distilled"] != "kd_transfer_te2":
        assert ("kd_transfer_te2", "ce_matched_te2_lr1e-09") in against

    # Timing exports the first seed's distilled student with the best dev score to onnx-int8 and measures it.
    assert bench.main(common + ["--timing"]) == 0
    results = json.loads((out / "results.json").read_text())
    timing = results["timing"]["1"]
    best_dev = max((c for c in map(json.loads, (p.read_text() for p in (runs / "cells").glob("L1_kd*_s42/cell.json")))),
                   key=lambda c: c["selected_dev_metric"])  # the distilled student dev prefers, never validation
    assert timing["variant"] == best_dev["label"] and timing["texts_per_s"] > 0 and timing["batch1_p50_ms"] > 0
    assert timing["texts_per_s_intra_op_only"] > 0 and "## Speed (onnx-int8" in (out / "report.md").read_text()
    assert rows[(1, timing["variant"])]["params"] > 0
    assert (out / "frontier.png").stat().st_size > 0
    # the report names every invocation that made it, in order, not only the last
    commands = results["commands"]
    assert len(commands) == 5 and "--learning-rate 1e-9" in commands[2] and commands[4].endswith("--timing")
    assert all(f"`{c}`" in (out / "report.md").read_text() for c in commands)


def test_a_cell_claimed_by_a_live_worker_is_skipped_and_a_dead_workers_claim_is_taken(tmp_path):
    import os
    import subprocess
    import sys

    bench = load_benchmark("frontier")
    mine = tmp_path / "a" / "claim"
    assert bench.claim(mine) and bench.claim(mine)  # this process holds it
    assert mine.read_text() == str(os.getpid())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        held = tmp_path / "b" / "claim"
        held.parent.mkdir()
        held.write_text(str(other.pid))
        assert not bench.claim(held)
    finally:
        other.kill()
        other.wait()
    assert bench.claim(held) and held.read_text() == str(os.getpid())  # its holder died


def test_out_of_fold_cells_are_compared_with_in_fold_labels_and_report_each_fold_teacher(
        tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, tiny_tfns_dir):
    path = _write_config(tmp_path, tiny_bert_classifier_dir, tiny_bert_dir, 20, cross_fit_folds=2)
    bench, out, runs = load_benchmark("frontier"), tmp_path / "out", tmp_path / "runs"
    assert bench.main(["--config", str(path), "--out", str(out), "--run-dir", str(runs), "--data-dir",
                       str(tiny_tfns_dir), "--sizes", "1", "--seeds", "1",
                       "--variants", "kd_transfer,kd_transfer_oof"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(c["a"], c["b"], c["seed"]) for c in results["controls"]] == [("kd_transfer_oof", "kd_transfer", 42)]
    oof, in_fold = (json.loads((runs / "cells" / f"L1_{v}_s42" / "cell.json").read_text())
                    for v in ("kd_transfer_oof", "kd_transfer"))
    assert oof["train_steps"] == in_fold["train_steps"]  # the same budget
    folds = results["teacher_folds"]
    assert [f["fold"] for f in folds] == ["fold_0", "fold_1"]
    assert sum(f["train_examples"] for f in folds) == results["dataset"]["n_train"]  # each blind to the other half
    report = (out / "report.md").read_text()
    assert "## Cross-fitted teachers (dev split)" in report and "| fold_1 |" in report


def test_the_grid_seed_chooses_so_more_seeds_at_the_chosen_rate_cannot_flip_the_choice():
    bench = load_benchmark("frontier")
    chosen = [{"seed": 42, "selected_dev_metric": 0.80}, {"seed": 43, "selected_dev_metric": 0.60},
              {"seed": 44, "selected_dev_metric": 0.61}]
    other = [{"seed": 42, "selected_dev_metric": 0.75}]
    assert bench.grid_score(chosen) == 0.80 > bench.grid_score(other)  # the mean (0.67) would have flipped it
    assert bench.grid_score([{"seed": 43, "selected_dev_metric": 0.7}, {"seed": 44, "selected_dev_metric": 0.5}]) \
        == pytest.approx(0.6)  # no grid-seed cell: the mean


def test_the_teacher_candidate_table_joins_the_report_best_dev_first(tmp_path):
    bench = load_benchmark("frontier")
    assert bench.teacher_candidates(tmp_path / "absent.json") is None

    def cand(name, dev_f1, acc):
        return {"name": name, "dev": {"macro_f1": dev_f1},
                "validation": {"accuracy": acc, "accuracy_ci": [acc - 0.01, acc + 0.01], "macro_f1": acc - 0.03}}

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"chosen": "b", "rule": "best dev macro-F1",
                                "candidates": {"a": cand("a", 0.80, 0.91), "b": cand("b", 0.86, 0.90)}}))
    tc = bench.teacher_candidates(path)
    assert [r["name"] for r in tc["rows"]] == ["b", "a"] and tc["chosen"] == "b"


def test_other_hyper_parameters_are_rows_of_their_own_and_ce_has_no_temperature():
    bench = load_benchmark("frontier")
    cells = bench.grid([2], ["ce", "kd_transfer"], 1, 2.0, 5e-4, 0.1, 4.0)
    assert [c.name for c in cells] == ["L2_ce_lr0.0005_ls0.1_s42", "L2_kd_transfer_te2_lr0.0005_ls0.1_T4_s42"]
    assert [c.name for c in bench.grid([2], ["ce", "kd_transfer"], 1, 2.0)] == ["L2_ce_s42", "L2_kd_transfer_te2_s42"]
    # a finished cell's label is read back from its cell.json, old ones (no such keys) as before
    info = {"variant": "kd_transfer", "transfer_epochs": 2.0, "learning_rate": None, "label_smoothing": 0.1,
            "temperature": 4.0}
    assert bench.cell_label(info) == "kd_transfer_te2_ls0.1_T4"
    assert bench.cell_label({"variant": "ce", "transfer_epochs": None, "learning_rate": 3e-4}) == "ce_lr0.0003"


def test_a_verdict_on_fewer_than_three_seeds_is_provisional():
    bench = load_benchmark("frontier")
    assert bench.provisional("missed", 1) == "provisional (missed on 1 seed of 3)"
    assert bench.provisional("met", 2) == "provisional (met on 2 seeds of 3)" and bench.provisional("met", 3) == "met"


def test_targets_are_judged_on_the_dev_chosen_rows_and_say_how_many_seeds():
    bench = load_benchmark("frontier")
    timing = {"texts_per_s": 2400.0, "int8_loss_points": 0.0}
    results = {
        "reference_rows": [{"role": "teacher", "accuracy": 0.91}],
        "dev_choice": {"2": {"ce": "ce", "distilled": "kd_transfer_te2"}},
        "frontier": [
            {"size": 2, "variant": "kd_transfer_te2", "accuracy_mean": 0.885, "macro_f1_mean": 0.845,
             "seeds": [42], "timing": timing},
            # another distilled row, which dev did not choose, is not what the targets read
            {"size": 2, "variant": "kd_transfer_te2_lr0.0005", "accuracy_mean": 0.80, "macro_f1_mean": 0.70,
             "seeds": [42, 43, 44], "timing": None}],
        "gains": [{"size": 2, "variant": "kd_transfer_te2", "seeds": [42, 43, 44], "gain_on_every_seed": True,
                   "min_gain_points": 1.2, "mean_gain_points": 2.0}],
    }
    status = {t["target"].split(" ")[0] + t["target"].split(" ")[1]: t["status"]
              for t in bench.check_targets(results)}
    assert status["teacheraccuracy"] == "met"
    assert status["distilledL2"] == "provisional (met on 1 seed of 3)"
    assert status["distilledL6"] == "not measured"
    assert status["L2:dev-chosen"] == "missed"  # CI > 0 on every seed, but one seed gained less than 1.5 points
    assert status["compactstudent"] == "provisional (met on 1 seed of 3)"
    results["frontier"][0]["seeds"] = [42, 43, 44]
    results["frontier"][0]["accuracy_mean"] = 0.869
    status = {t["target"].split(" ")[0]: t["status"] for t in bench.check_targets(results)}
    assert status["compact"] == "missed"  # 0.869 < 0.87 over 3 seeds
