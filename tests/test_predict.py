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
    from findistill.deploy.runtime import load_classifier

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


BLANK_ROW = {"text": "", "label": None, "probs": None, "error": "blank line"}


def test_txt_csv_jsonl_inputs_keep_order(tmp_path, student_dir, texts, expected):
    from findistill.deploy.predict import main

    files = _write_inputs(tmp_path, texts)
    for fmt, path in files.items():
        out = tmp_path / f"out-{fmt}.jsonl"
        extra = ["--text-column", "sentence"] if fmt == "csv" else []
        assert main([str(student_dir), "--input", str(path), "--output", str(out), "--batch-size", "4", *extra]) == 0
        lines = out.read_text(encoding="utf-8").splitlines()
        if fmt == "txt":  # the blank line after the fifth text keeps its place
            assert json.loads(lines.pop(5)) == BLANK_ROW
        _check(lines, texts, expected)


def test_txt_blank_lines_keep_alignment(tmp_path, capsys, student_dir, texts, expected):
    """Output line k answers input line k: blank and whitespace-only lines get a null row, nothing is dropped."""
    from findistill.deploy.predict import main

    lines_in = ["", texts[0], "   ", texts[1], "", "", texts[2], "\t", texts[3]]
    path = tmp_path / "gaps.txt"
    path.write_text("\n".join(lines_in) + "\n", encoding="utf-8")
    out = tmp_path / "gaps.jsonl"
    assert main([str(student_dir), "--input", str(path), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(lines_in)
    for line, row in zip(lines_in, rows):
        if line.strip():
            assert row["text"] == line and row["label"] in ("negative", "neutral", "positive")
        else:
            assert row == BLANK_ROW
    _check([json.dumps(r) for r in rows if r["text"]], texts[:4], expected[:4])
    assert f"wrote {len(lines_in)} predictions" in capsys.readouterr().err


def test_predict_help_documents_blank_lines(capsys):
    from findistill.deploy.predict import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert '"error": "blank line"' in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("case", ["missing_folder", "folder_is_a_file", "output_is_a_folder", "read_only_fs"])
def test_unwritable_output_exits_2_with_one_line(tmp_path, capsys, student_dir, case, monkeypatch):
    from findistill.deploy.predict import main

    src = tmp_path / "in.txt"
    src.write_text("$AAPL soars\n")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "ro").mkdir()
    out = {"missing_folder": tmp_path / "no" / "such" / "pred.jsonl",
           "folder_is_a_file": tmp_path / "a-file" / "pred.jsonl",
           "output_is_a_folder": tmp_path / "a-folder",
           "read_only_fs": tmp_path / "ro" / "pred.jsonl"}[case]
    if case == "read_only_fs":  # root ignores permission bits; a read-only file system refuses even root
        import tempfile

        def refuse(*args, **kwargs):
            if str(kwargs.get("dir", "")).startswith(str(tmp_path / "ro")):
                raise OSError(30, "Read-only file system")
            return real_mkstemp(*args, **kwargs)

        real_mkstemp = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main([str(student_dir), "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("findistill: error: --output") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_unwritable_output_is_refused_before_the_model_loads(tmp_path, capsys):
    from findistill.deploy.predict import main

    src = tmp_path / "in.txt"
    src.write_text("$AAPL soars\n")
    assert main([str(tmp_path / "no-model"), "--input", str(src), "--output", str(tmp_path / "no" / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "model" not in err


def test_stdin_to_stdout(monkeypatch, capsys, student_dir, texts, expected):
    from findistill.deploy.predict import main

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    assert main([str(student_dir), "--input", "-"]) == 0
    _check(capsys.readouterr().out.splitlines(), texts, expected)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps({"t": t}) for t in texts)))
    assert main([str(student_dir), "--input", "-", "--format", "jsonl", "--text-column", "t"]) == 0
    _check(capsys.readouterr().out.splitlines(), texts, expected)


def test_exported_variant_works_too(tmp_path, student_dir, texts, expected):
    from findistill.deploy.export import export
    from findistill.deploy.predict import main

    export(student_dir, tmp_path / "exp", variants=["torch-int8"])
    path = _write_inputs(tmp_path, texts)["txt"]
    out = tmp_path / "out.jsonl"
    assert main([str(tmp_path / "exp" / "torch-int8"), "--input", str(path), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows.pop(5) == BLANK_ROW
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
    from findistill.deploy.predict import main

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
    out.parent.mkdir()
    model = str(tmp_path / "no-model") if case == "bad_model" else str(student_dir)
    assert main([model, "--input", str(inputs[case]), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("findistill: error:") and needle in err and err.count("\n") == 1
    assert not out.exists() and not any(out.parent.iterdir())


def test_long_input_shows_progress_on_stderr(tmp_path, capsys, student_dir):
    from findistill.deploy.predict import main

    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"$AAPL up {i}" for i in range(1001)) + "\n")
    out = tmp_path / "many.jsonl"
    assert main([str(student_dir), "--input", str(path), "--output", str(out), "--batch-size", "256"]) == 0
    assert len(out.read_text().splitlines()) == 1001 and "1001/1001" in capsys.readouterr().err
