"""Analysis: slices, entity swap, ECE, temperature scaling, model card, `findistill analyze` end to end on a tiny
run, and report.html rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import require_chromium, write_tfns_folder
from findistill.__main__ import main
from findistill.analysis.analyze import (expected_calibration_error, fit_temperature, load_entities, load_probes,
                                 slice_masks, softmax, swap_entities)


def test_slice_definitions_on_hand_made_tweets():
    texts = [
        "$AAPL beats estimates https://t.co/a1b2",
        "$AAPL and $TSLA fall 5% in early trade",
        "Markets are BOOMING as stocks rally…",
        "Fed holds rates steady",
        "Read more about the deal... https://t.co/x9y8",
        "Price target raised to $150 by analysts",
        "Revenue up 12 percent at NYSE-listed firm",
        "CEO of $BRK.B speaks",
    ]
    masks = slice_masks(texts)
    expect = {
        "cashtag": [1, 1, 0, 0, 0, 0, 0, 1],
        "cashtags_2plus": [0, 1, 0, 0, 0, 0, 0, 0],
        "url": [1, 0, 0, 0, 1, 0, 0, 0],
        "truncated": [0, 0, 1, 0, 1, 0, 0, 0],
        "number": [0, 1, 0, 0, 0, 1, 1, 0],  # URL digits and cashtags do not count; "$150" does
        "percentage": [0, 1, 0, 0, 0, 0, 1, 0],
        "all_caps": [0, 0, 1, 0, 0, 0, 1, 0],  # BOOMING, NYSE; "CEO" is too short, "$BRK.B" is a cashtag
    }
    for name, expected in expect.items():
        assert masks[name].astype(int).tolist() == expected, name
    assert masks["all"].all()
    quartiles = np.stack([masks[f"length_q{q}"] for q in range(1, 5)])
    assert (quartiles.sum(axis=0) == 1).all()
    assert masks["length_q1"][texts.index("Fed holds rates steady")]
    assert masks["length_q4"][texts.index("Read more about the deal... https://t.co/x9y8")]


def test_entity_swap_changes_exactly_the_entities():
    entities = load_entities()
    tickers = {e.name: e.ticker for e in entities}
    text = "Apple ($AAPL) and $BYND rally while Nomura cuts Apple's target https://t.co/Apple1"
    swap = swap_entities(text, entities, np.random.default_rng(3))
    assert set(swap.mapping) == {"Apple", "$BYND", "Nomura"}
    inserted = list(swap.mapping.values())
    assert len(set(inserted)) == 3 and not {"Apple", "Nomura"} & set(inserted)
    apple, bynd, nomura = swap.mapping["Apple"], swap.mapping["$BYND"], swap.mapping["Nomura"]
    expected = (f"{apple} (${tickers[apple]}) and ${tickers[bynd]} rally while {nomura} cuts {apple}'s target "
                "https://t.co/Apple1")
    assert swap.text == expected
    assert [m.surface for m in swap.mentions] == ["Apple", "$AAPL", "$BYND", "Nomura", "Apple"]
    assert swap_entities("Markets rally on jobs data", entities, np.random.default_rng(0)) is None
    again = swap_entities(text, entities, np.random.default_rng(3))
    assert again.text == swap.text  # seeded


def test_ece_against_a_hand_computed_case():
    probs = np.array([[0.90, 0.05, 0.05],   # bin 13 (0.867, 0.933], right
                      [0.05, 0.90, 0.05],   # bin 13, wrong
                      [0.62, 0.28, 0.10],   # bin 9 (0.6, 0.667], right
                      [0.30, 0.45, 0.25]])  # bin 6 (0.4, 0.467], wrong
    y = np.array([0, 0, 0, 2])
    # 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.62| + 1/4 * |0 - 0.45|
    assert expected_calibration_error(probs, y) == pytest.approx(0.2 + 0.095 + 0.1125)
    # One bin holding everything: |accuracy - mean confidence| = |0.5 - 0.7175|.
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(0.2175)


def test_temperature_scaling_lowers_ece_of_an_over_confident_model():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 3, size=n)
    z = rng.normal(size=(n, 3))
    z[np.arange(n), y] += 1.0
    logits = 5.0 * z  # the same ranking, five times too sharp
    dev, test = slice(0, n // 2), slice(n // 2, n)
    temperature = fit_temperature(logits[dev], y[dev])
    assert 3.0 < temperature < 7.0
    before = expected_calibration_error(softmax(logits[test]), y[test])
    after = expected_calibration_error(softmax(logits[test], temperature), y[test])
    assert before > 0.15 and after < before / 3


def test_probes_are_minimal_pairs_with_known_labels():
    probes = load_probes()
    pairs = {}
    for p in probes:
        assert p["label"] in ("negative", "neutral", "positive") and p["kind"] in ("polarity", "negation", "hedging",
                                                                                  "neutral")
        pairs.setdefault(p["pair"], []).append(p)
    assert all(len(v) == 2 for v in pairs.values()) and len(pairs) >= 25


# --------------------------------------------------------------------------------------------- end to end


def _write_config(path: Path, teacher_dir: Path, student_dir: Path) -> Path:
    config = {
        "name": "tiny-analysis",
        "data": {"dev_fraction": 0.2},
        "teacher": {"kind": "prompted_lm", "model": str(teacher_dir), "name": "tiny-llama", "batch_size": 8,
                    "health_gate": False},  # a random teacher
        "student": {"model": str(student_dir), "name": "tiny-bloom", "method": "lora", "lora": {"r": 4, "alpha": 8},
                    "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
        "eval": {"bootstrap_samples": 200},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, tiny_llama_dir, tiny_bloom_dir):
    root = tmp_path_factory.mktemp("analysis-run")
    data = write_tfns_folder(root / "tfns", n_train=60, n_valid=40)
    config = _write_config(root / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir)
    out = root / "run"
    assert main(["run", str(config), "--out", str(out), "--data-dir", str(data)]) == 0
    return out, data


def test_run_ends_with_the_analysis(analysed_run):
    out, _ = analysed_run
    doc = json.loads((out / "analysis" / "analysis.json").read_text())
    roles = {"teacher", "student_baseline", "student_ce", "student_distilled"}
    assert set(doc["slices"]["rows"]) == roles and doc["eval"]["n"] == 40
    assert set(doc["entity_swap"]["models"]) == {"teacher", "student_ce", "student_distilled"}
    assert doc["entity_swap"]["n"] > 0  # the tiny tweets mention $AAPL, Tesla, Nomura ...
    assert set(doc["probes"]["models"]) == {"teacher", "student_ce", "student_distilled"}
    assert doc["calibration"]["student_baseline"]["temperature"] is None
    for role in ("teacher", "student_ce", "student_distilled"):
        assert doc["calibration"][role]["fitted_on"] == "dev" and doc["calibration"][role]["temperature"] > 0
    assert doc["teacher_student"]["student"] == "student_distilled"
    assert {p.name for p in (out / "analysis" / "figures").iterdir()} >= {"confusion.png", "reliability.png",
                                                                          "slices.png", "entity_swap.png"}
    for folder in ("student", "student_ce"):
        cal = json.loads((out / folder / "calibration.json").read_text())
        assert cal["fitted_on"] == "dev" and cal["temperature"] > 0
        assert {"ece_before", "ece_after"} <= set(cal)
        assert (out / folder / "README.md").is_file()
    page = (out / "report.html").read_text()
    assert 'id="results"' in page and "tiny-bloom" in page and "http" not in page.split("<body>")[0]


def test_model_card_header_parses_with_model_index(analysed_run):
    out, _ = analysed_run
    card = (out / "student" / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, card[:200]
    header = yaml.safe_load(match.group(1))
    results = json.loads((out / "results.json").read_text())
    row = next(r for r in results["rows"] if r["role"] == "student_distilled")
    assert header["license"] and header["datasets"] == ["zeroshot/twitter-financial-news-sentiment"]
    assert set(header["metrics"]) == {"accuracy", "f1"}
    metrics = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == pytest.approx(row["accuracy"], abs=1e-4)
    assert metrics["f1"] == pytest.approx(row["macro_f1"], abs=1e-4)
    for section in ("## Intended use", "## Training data", "## Teacher", "## Distillation settings", "## Evaluation",
                    "### Slices", "### Calibration", "### Entity swap", "## Limitations"):
        assert section in card


def test_analyze_command_on_a_run_and_on_a_saved_model(analysed_run, tiny_bert_classifier_dir, tmp_path, capsys):
    out, data = analysed_run
    log = [{"step": 2, "loss": 1.2, "kd_loss": 0.7, "ce_loss": 1.1}, {"step": 4, "loss": 0.9, "kd_loss": 0.5,
                                                                       "ce_loss": 0.8}, {"step": 4, "eval_loss": 1.0}]
    (out / "student" / "training_log.json").write_text(json.dumps(log))
    try:
        assert main(["analyze", str(out), "--data-dir", str(data)]) == 0
    finally:
        (out / "student" / "training_log.json").unlink()
    assert (out / "analysis" / "figures" / "training.png").is_file()
    assert "Training curves" in (out / "report.html").read_text()

    target = tmp_path / "mine"
    assert main(["analyze", "--model", str(out / "student"), "--eval-file", str(data / "sent_valid.csv"),
                 "--label-map", "tfns", "--out", str(target), "--max-length", "24"]) == 0
    doc = json.loads((target / "analysis.json").read_text())
    assert doc["eval"]["n"] == 40 and doc["calibration"]["model"]["temperature"] is None  # no --dev-file
    assert doc["probes"]["models"]["model"]["accuracy"] >= 0 and (target / "report.html").is_file()

    mine = tmp_path / "copy"
    shutil.copytree(out / "student", mine)
    (mine / "calibration.json").unlink()
    assert main(["analyze", "--model", str(mine), "--eval-file", str(data / "sent_valid.csv"), "--dev-file",
                 str(data / "sent_train.csv"), "--label-map", "tfns", "--out", str(tmp_path / "cal")]) == 0
    cal = json.loads((mine / "calibration.json").read_text())
    assert cal["fitted_on"] == "dev" and cal["dev_examples"] == 60

    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["analyze", "--model", str(out / "student")]) == 2
    # Bearish/Bullish/Neutral are not the canonical classes: refused rather than guessed.
    assert main(["analyze", "--model", str(tiny_bert_classifier_dir), "--eval-file", str(data / "sent_valid.csv"),
                 "--label-map", "tfns", "--out", str(tmp_path / "x")]) == 2
    assert "are not negative, neutral, positive" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- browser

_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var d = document.createElement("div");
  d.id = "img-check";
  d.textContent = "images " + ok + "/" + imgs.length + " table " + !!document.getElementById("results");
  document.body.appendChild(d);
});
</script>"""


@pytest.mark.slow
def test_report_html_renders_in_chromium(analysed_run, tmp_path):
    chromium = require_chromium()
    out, _ = analysed_run
    page = tmp_path / "report.html"
    page.write_text((out / "report.html").read_text().replace("</body>", _CHECK + "</body>"))
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r"images (\d+)/(\d+) table (true|false)", proc.stdout)
    assert found, (proc.stdout[-1000:], proc.stderr[-2000:])
    loaded, total, table = int(found.group(1)), int(found.group(2)), found.group(3)
    assert total >= 4 and loaded == total and table == "true"
