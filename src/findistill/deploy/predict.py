"""``findistill predict``: classify a file of texts with any student variant and write JSONL.

Input formats: ``.txt`` (one text per line), ``.csv`` (the ``--text-column``), ``.jsonl`` (objects holding the
text column, or bare JSON strings; blank lines are skipped). ``-`` reads stdin as txt lines unless ``--format``
says otherwise. Output: one JSON object per input text, in input order, ``{"text", "label", "probs": {label: p}}``,
to ``--output`` (written to a temp file in the output's folder, then renamed) or stdout. A blank (or
whitespace-only) line of a .txt input keeps its place: it gets ``{"text": "", "label": null, "probs": null,
"error": "blank line"}``, so output line k always answers input line k. The output's folder must exist and be
writable; this is checked before the model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from findistill.errors import DataError, FindistillError

FORMATS = ("txt", "csv", "jsonl")
PROGRESS_MIN_TEXTS = 1000


def detect_format(path: str, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
        return fmt
    if path == "-":
        return "txt"
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown input format {suffix or '(none)'!r}; use .txt, .csv or .jsonl or --format")
    return suffix


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file not found: {path}")
    try:
        return p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it as UTF-8 text ({err})") from None


def read_rows(path: str, fmt: str | None = None, text_column: str = "text",
              keep_blank: bool = False) -> list[dict[str, Any]]:
    """Rows of ``path`` as dicts. txt lines and bare JSONL strings become ``{text_column: line}``.

    Blank txt lines are skipped, or with ``keep_blank`` kept as ``{text_column: ""}`` (so row k is line k).
    """
    fmt = detect_format(path, fmt)
    content = _read_text(path)
    name = "<stdin>" if path == "-" else path
    if fmt == "txt":
        if keep_blank:
            return [{text_column: line if line.strip() else ""} for line in content.splitlines()]
        return [{text_column: line} for line in content.splitlines() if line.strip()]
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(content))
        if reader.fieldnames is None:
            raise DataError(f"{name}: empty CSV (no header)")
        return [dict(row) for row in reader]
    rows = []
    for lineno, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}:{lineno}: invalid JSON ({err.msg})") from None
        if isinstance(value, str):
            value = {text_column: value}
        if not isinstance(value, dict):
            raise DataError(f"{name}:{lineno}: expected a JSON object or string, got {type(value).__name__}")
        rows.append(value)
    return rows


def column(rows: list[dict[str, Any]], key: str, source: str) -> list[Any]:
    """Values of ``key`` in every row; DataError naming the first row that lacks it."""
    values = []
    for i, row in enumerate(rows, 1):
        if key not in row or row[key] is None:
            keys = ", ".join(map(str, row)) or "none"
            raise DataError(f"{source}: row {i} has no {key!r} column (columns: {keys})")
        values.append(row[key])
    return values


def read_texts(path: str, fmt: str | None = None, text_column: str = "text", keep_blank: bool = False) -> list[str]:
    """The texts of an input file in order; DataError when missing, malformed or empty.

    ``keep_blank``: blank txt lines come back as ``""`` in their place (an input of only blank lines is still empty).
    """
    rows = read_rows(path, fmt, text_column, keep_blank)
    source = "<stdin>" if path == "-" else path
    if not rows or (keep_blank and all(row.get(text_column) == "" for row in rows)):
        raise DataError(f"{source}: no texts")
    texts = column(rows, text_column, source)
    for i, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise DataError(f"{source}: row {i}: {text_column!r} must be a string, got {type(text).__name__}")
    return texts


def check_output(path: str | None) -> None:
    """DataError unless ``path`` can be written: its folder exists, is a folder and is writable; it is no folder.

    A temp file is created and removed in the folder, so a read-only file system or missing rights show up here,
    before any model loads, and not after the predictions were computed.
    """
    if path is None or path == "-":
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise DataError(f"--output {path}: is a folder; name a file inside it")
    if not folder.exists():
        raise DataError(f"--output {path}: folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise DataError(f"--output {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DataError(f"--output {path}: cannot write in {folder} ({err.strerror or type(err).__name__})") from None


@contextlib.contextmanager
def _atomic_output(path: str | None):
    """Yield a text handle; a file output is written to a temp sibling and renamed only on success."""
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise DataError(f"--output {path}: cannot write in {target.parent} "
                        f"({err.strerror or type(err).__name__})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise DataError(f"--output {path}: cannot write it ({err.strerror or type(err).__name__})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def predict_file(model: str, input_path: str, output: str | None = None, text_column: str = "text",
                 batch_size: int = 64, fmt: str | None = None, max_length: int | None = None) -> int:
    """Classify ``input_path`` and write JSONL; returns the number of rows written (blank lines included)."""
    from findistill.deploy.runtime import load_classifier

    # Read the input and check the output first: a bad input or output never loads the model.
    texts = read_texts(input_path, fmt, text_column, keep_blank=True)
    check_output(output)
    classifier = load_classifier(model, max_length=max_length)
    txt = detect_format(input_path, fmt) == "txt"
    keep = [i for i, text in enumerate(texts) if text or not txt]  # blank txt lines were read as ""
    probs = classifier.predict_proba([texts[i] for i in keep], batch_size=batch_size,
                                     progress=len(keep) > PROGRESS_MIN_TEXTS)
    rows: list[dict[str, Any]] = [{"text": "", "label": None, "probs": None, "error": "blank line"}
                                  for _ in texts]
    for i, pred in zip(keep, classifier.to_predictions(probs)):
        rows[i] = {"text": texts[i], **pred}
    with _atomic_output(output) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="findistill predict", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a student folder or an exported variant folder (torch-int8, onnx, onnx-int8)")
    p.add_argument("--input", required=True,
                   help="a .txt, .csv or .jsonl file, or - for stdin. A blank line of a .txt input gets the row "
                        '{"text": "", "label": null, "probs": null, "error": "blank line"}, so output line k '
                        "answers input line k")
    p.add_argument("--output", default=None,
                   help="JSONL output file (default: stdout); its folder must exist and be writable")
    p.add_argument("--text-column", default="text", help="column / key holding the text (csv, jsonl)")
    p.add_argument("--format", choices=FORMATS, default=None, help="input format (default: from the suffix)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None, help="maximum tokens per text")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("findistill: error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        n = predict_file(args.model, args.input, args.output, args.text_column, args.batch_size,
                         args.format, args.max_length)
    except FindistillError as err:
        print(f"findistill: error: {err}", file=sys.stderr)
        return 2
    if args.output:
        print(f"wrote {n} predictions to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# Five sentences whose answer a finance reader knows: clear negative, clear positive, neutral, a negation, a hedge.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Shares of $XYZ plunge after the company cuts its full-year outlook", "negative"),
    ("$ABC jumps 12% after quarterly earnings beat estimates and guidance is raised", "positive"),
    ("The company will hold its annual shareholder meeting on May 4", "neutral"),
    ("Revenue did not fall this quarter, easing fears of a decline", "positive"),
    ("Analysts see a possible downgrade if margins keep shrinking", "negative"),
)


def describe_examples(model_dir: str | Path) -> str:
    """The model's label and class probabilities for :data:`EXAMPLES`, one line each (the end of ``findistill run``)."""
    from findistill.deploy.runtime import load_classifier

    clf = load_classifier(model_dir)
    rows = clf.classify([text for text, _ in EXAMPLES])
    lines = []
    for (text, expected), row in zip(EXAMPLES, rows):
        probs = "  ".join(f"{name} {p:.2f}" for name, p in row["probs"].items())
        mark = "" if row["label"] == expected else f"   (a reader would say {expected})"
        lines.append(f"  {row['label']:<9} [{probs}]  {text}{mark}")
    return "\n".join(lines)
