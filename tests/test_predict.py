"""predict: .txt / .csv / .jsonl / stdin inputs → JSONL in input order; bad inputs exit 2 and write nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    from test_export import save_canonical_classifier

    return save_canonical_classifier(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for t, _ in make_rows(12, 21)] + ['quotes "and", commas, unicode – €']


@pytest.fixture(scope="module")
def expected(student_dir, texts) -> np.ndarray:
    from findistill.runtime import load_classifier

    return load_classifier(student_dir).predict_proba(texts)


def _check(lines: list[str], texts: list[str], expected: np.ndarray) -> None:
    rows = [json.loads(line) for line in lines if line.strip()]
    assert [r["text"] for r in rows] == texts
    labels = ["negative", "neutral", "positive"]
    for row, probs in zip(rows, expected):
        assert set(row) == {"text", "label", "probs"} and list(row["probs"]) == labels
        assert row["label"] == labels[int(probs.argmax())]
        np.testing.assert_allclose([row["probs"][n] for n in labels], probs, atol=1e-5)


def _write_inputs(folder: Path, texts: list[str]) -> dict[str, Path]:
    import csv

    txt = folder / "in.txt"
    txt.write_text("\n".join(texts[:5]) + "\n\n" + "\n".join(texts[5:]) + "\n", encoding="utf-8")  # a blank line
    with open(folder / "in.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "sentence"])
        writer.writerows(enumerate(texts))
    jsonl = folder / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t} if i % 2 else t) for i, t in enumerate(texts)) + "\n",
                     encoding="utf-8")
    return {"txt": txt, "csv": folder / "in.csv", "jsonl": jsonl}


def test_txt_csv_jsonl_inputs_keep_order(tmp_path, student_dir, texts, expected):
    from findistill.predict import main

    files = _write_inputs(tmp_path, texts)
    for fmt, path in files.items():
        out = tmp_path / f"out-{fmt}.jsonl"
        extra = ["--text-column", "sentence"] if fmt == "csv" else []
        assert main([str(student_dir), "--input", str(path), "--output", str(out), "--batch-size", "4", *extra]) == 0
        _check(out.read_text(encoding="utf-8").splitlines(), texts, expected)


def test_stdin_to_stdout(monkeypatch, capsys, student_dir, texts, expected):
    from findistill.predict import main

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    assert main([str(student_dir), "--input", "-"]) == 0
    _check(capsys.readouterr().out.splitlines(), texts, expected)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps({"t": t}) for t in texts)))
    assert main([str(student_dir), "--input", "-", "--format", "jsonl", "--text-column", "t"]) == 0
    _check(capsys.readouterr().out.splitlines(), texts, expected)


def test_exported_variant_works_too(tmp_path, student_dir, texts, expected):
    from findistill.export import export
    from findistill.predict import main

    export(student_dir, tmp_path / "exp", variants=["torch-int8"])
    path = _write_inputs(tmp_path, texts)["txt"]
    out = tmp_path / "out.jsonl"
    assert main([str(tmp_path / "exp" / "torch-int8"), "--input", str(path), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    assert np.mean([r["label"] == ["negative", "neutral", "positive"][int(p.argmax())]
                    for r, p in zip(rows, expected)]) >= 0.8


@pytest.mark.parametrize("case, needle", [
    ("missing_file", "not found"),
    ("missing_column", "no 'text' column"),
    ("empty", "no texts"),
    ("bad_json", "invalid JSON"),
    ("non_string", "must be a string"),
    ("unknown_suffix", "unknown input format"),
    ("bad_model", "model folder not found"),
])
def test_bad_inputs_exit_2_without_output(tmp_path, capsys, student_dir, case, needle):
    from findistill.predict import main

    inputs = {
        "missing_file": tmp_path / "nope.txt",
        "missing_column": tmp_path / "a.csv",
        "empty": tmp_path / "e.txt",
        "bad_json": tmp_path / "b.jsonl",
        "non_string": tmp_path / "n.jsonl",
        "unknown_suffix": tmp_path / "x.xlsx",
        "bad_model": tmp_path / "ok.txt",
    }
    (tmp_path / "a.csv").write_text("sentence\nhello\n")
    (tmp_path / "e.txt").write_text("\n  \n")
    (tmp_path / "b.jsonl").write_text('{"text": "a"}\n{"text": \n')
    (tmp_path / "n.jsonl").write_text('{"text": 3}\n')
    (tmp_path / "x.xlsx").write_text("x")
    (tmp_path / "ok.txt").write_text("hello\n")
    out = tmp_path / "out" / "pred.jsonl"
    model = str(tmp_path / "no-model") if case == "bad_model" else str(student_dir)
    assert main([model, "--input", str(inputs[case]), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("findistill: error:") and needle in err and err.count("\n") == 1
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_long_input_shows_progress_on_stderr(tmp_path, capsys, student_dir):
    from findistill.predict import main

    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"$AAPL up {i}" for i in range(1001)) + "\n")
    out = tmp_path / "many.jsonl"
    assert main([str(student_dir), "--input", str(path), "--output", str(out), "--batch-size", "256"]) == 0
    assert len(out.read_text().splitlines()) == 1001 and "1001/1001" in capsys.readouterr().err
