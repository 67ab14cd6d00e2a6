"""Datasets -> canonical splits: TFNS (hub or a local folder), CSV/TSV/JSONL/JSON/parquet tables, transfer texts.

Every label is mapped through ``DataConfig.label_map`` onto the canonical ids of ``config.LABEL2ID``; transfer texts
get label ``-1``. The dev split is carved from train (seeded, stratified), optional caps are seeded stratified
subsamples, and exact duplicate texts across splits (after NFKC + whitespace normalisation) are reported, never dropped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from findistill.config import LABEL2ID, LABELS, TFNS_HUB_ID, DataConfig
from findistill.errors import DataError, first_line

logger = logging.getLogger(__name__)

TFNS_FILES = {"train": "sent_train.csv", "validation": "sent_valid.csv"}
DATA_DIR_ENV = "FINDISTILL_DATA_DIR"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
MAX_DUPLICATE_EXAMPLES = 3


@dataclass
class TextSplit:
    """Texts with canonical label ids (``-1``: no gold label)."""

    name: str
    texts: list[str]
    labels: list[int]
    sources: list[str] | None = None  # transfer texts: the data.transfer_files entry each text came from

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise DataError(f"split {self.name!r}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextSplit:
        return TextSplit(self.name, [self.texts[i] for i in indices], [self.labels[i] for i in indices],
                         None if self.sources is None else [self.sources[i] for i in indices])

    def label_counts(self) -> dict[str, int]:
        """Counts per canonical class (all classes present, zeros included); ``unlabelled`` only when any."""
        counts = Counter(self.labels)
        out = {name: counts.get(i, 0) for i, name in enumerate(LABELS)}
        if counts.get(-1):
            out["unlabelled"] = counts[-1]
        return out


@dataclass
class DatasetSplits:
    """The splits of one run plus the cross-split duplicate report."""

    name: str
    train: TextSplit
    dev: TextSplit
    eval: TextSplit
    transfer: TextSplit | None = None
    duplicates: dict = field(default_factory=dict)
    transfer_report: dict = field(default_factory=dict)  # counts of build_transfer
    holdout: TextSplit | None = None  # held-out transfer texts (fidelity per source; never trained on)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary for results.json; ``n``/``label_counts`` describe the evaluation split."""
        out: dict[str, Any] = {
            "name": self.name,
            "split": self.eval.name,
            "n": len(self.eval),
            "n_train": len(self.train),
            "n_dev": len(self.dev),
            "label_counts": self.eval.label_counts(),
            "label_counts_train": self.train.label_counts(),
            "label_counts_dev": self.dev.label_counts(),
            "duplicates": {**self.duplicates.get("counts", {}), "within": dict(self.duplicates.get("within", {}))},
        }
        if self.transfer is not None:
            out["n_transfer"] = len(self.transfer)
            out["transfer"] = dict(self.transfer_report)
        if self.holdout is not None:
            out["n_holdout"] = len(self.holdout)
        return out


# --------------------------------------------------------------------------------------------- reading files


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def _read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a table as dicts plus its column names."""
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                rows = list(reader)
                return rows, list(reader.fieldnames or [])
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return table.to_pylist(), list(table.column_names)
        if suffix in (".jsonl", ".json"):
            rows = _read_json_rows(path)
            return rows, sorted({key for row in rows for key in row})
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise DataError(f"{path}: cannot read ({first_line(err, with_type=True)})") from None
    raise DataError(f"{path}: unsupported file type {suffix!r} (use {', '.join(TABLE_SUFFIXES)})")


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list):  # JSON lines (a .json file may hold them too)
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DataError(f"{path}: expected JSON objects (one per line, or a list of them)")
    return data


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _texts(rows: list[dict[str, Any]], columns: list[str], column: str, path: Path) -> list[str]:
    if not rows:
        raise DataError(f"{path}: no rows")
    if column not in columns:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(map(str, columns))})")
    texts = []
    for i, row in enumerate(rows, start=1):
        value = row.get(column)
        text = "" if _is_missing(value) else str(value)
        if not text.strip():
            raise DataError(f"{path}: row {i}: empty text in column {column!r}")
        texts.append(text)
    return texts


def _label_key(value: Any) -> str:
    """A label value as the string key of ``label_map`` (1, 1.0, "1" and " 1 " all give "1")."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _map_label(value: Any, label_map: dict[str, str], path: Path, row: int, column: str) -> int:
    if _is_missing(value) or str(value).strip() == "":
        raise DataError(f"{path}: row {row}: missing label in column {column!r}")
    key = _label_key(value)
    target = label_map.get(key)
    if target is None:  # tolerate case differences when unambiguous ("Bearish" vs "bearish")
        folded = [v for k, v in label_map.items() if k.strip().casefold() == key.casefold()]
        target = folded[0] if len(set(folded)) == 1 else None
    if target is None:
        known = ", ".join(map(repr, label_map))
        raise DataError(f"{path}: row {row}: label value {key!r} in column {column!r} is not in label_map ({known})")
    return LABEL2ID[target]


def load_table(path: str | Path, text_column: str, label_column: str, label_map: dict[str, str],
               name: str) -> TextSplit:
    """A labelled table (.csv/.tsv/.jsonl/.json/.parquet) -> TextSplit with canonical label ids."""
    path = Path(path)
    rows, columns = _read_records(path)
    return _labelled(rows, columns, text_column, label_column, label_map, path, name)


def _labelled(rows: list[dict[str, Any]], columns: list[str], text_column: str, label_column: str,
              label_map: dict[str, str], where: Path, name: str) -> TextSplit:
    texts = _texts(rows, columns, text_column, where)
    if label_column not in columns:
        raise DataError(f"{where}: no column {label_column!r} (columns: {', '.join(map(str, columns))})")
    labels = [_map_label(row.get(label_column), label_map, where, i, label_column) for i, row in enumerate(rows, 1)]
    return TextSplit(name, texts, labels)


def load_unlabelled(path: str | Path, text_column: str = "text", name: str = "transfer") -> TextSplit:
    """Unlabelled texts: .txt (one per line, blank lines skipped) or a table with ``text_column``; labels are -1."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        _check_file(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read ({type(err).__name__})") from None
        texts = [line.strip() for line in lines if line.strip()]
        if not texts:
            raise DataError(f"{path}: no non-blank lines")
    else:
        rows, columns = _read_records(path)
        texts = _texts(rows, columns, text_column, path)
    return TextSplit(name, texts, [-1] * len(texts))


# --------------------------------------------------------------------------------------------- sampling


def _allocate(class_sizes: dict[int, int], n: int) -> dict[int, int]:
    """Split ``n`` over classes proportionally (largest remainder), at least one per class when n allows."""
    total = sum(class_sizes.values())
    exact = {c: n * size / total for c, size in class_sizes.items()}
    quota = {c: int(math.floor(v)) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: n - sum(quota.values())]:
        quota[c] += 1
    if n >= len(class_sizes):
        for c in class_sizes:
            while quota[c] == 0:
                donor = max(quota, key=lambda k: quota[k])
                quota[donor] -= 1
                quota[c] += 1
    return {c: min(q, class_sizes[c]) for c, q in quota.items()}


def stratified_indices(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` sorted indices keeping class proportions; deterministic for a seed."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    quota = _allocate({c: len(ix) for c, ix in sorted(by_class.items())}, n)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in sorted(by_class):
        members = np.asarray(by_class[c])
        chosen.extend(int(i) for i in rng.permutation(members)[: quota[c]])
    return sorted(chosen)


def stratified_subsample(split: TextSplit, n: int | None, seed: int) -> TextSplit:
    """A seeded stratified subsample of ``n`` rows (all rows, in order, when ``n`` is None or >= len)."""
    if n is None or n >= len(split):
        return split.subset(range(len(split)))
    return split.subset(stratified_indices(split.labels, n, seed))


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """``k`` disjoint, stratified, seeded folds covering every index once (sorted within a fold)."""
    if k < 2:
        raise DataError(f"cross-fitting needs at least 2 folds, got {k}")
    counts = Counter(int(label) for label in labels)
    if any(n < k for n in counts.values()):
        small = ", ".join(f"{LABELS[c] if 0 <= c < len(LABELS) else c} ({n})" for c, n in sorted(counts.items())
                          if n < k)
        raise DataError(f"cross_fit_folds={k}: every class needs at least {k} training texts; too few: {small}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in sorted(counts):
        members = rng.permutation([i for i, label in enumerate(labels) if int(label) == c])
        for j, i in enumerate(members):  # round-robin, continuing where the previous class stopped: sizes differ by <= 1
            folds[(offset + j) % k].append(int(i))
        offset += len(members)
    return [sorted(fold) for fold in folds]


def split_dev(train: TextSplit, fraction: float, seed: int) -> tuple[TextSplit, TextSplit]:
    """Carve a seeded, stratified dev split of ``fraction`` from ``train``; both keep the file order."""
    n_dev = max(1, round(fraction * len(train)))
    if n_dev >= len(train):
        raise DataError(f"training split {train.name!r} has {len(train)} rows, too few for a dev split")
    dev_ix = stratified_indices(train.labels, n_dev, seed)
    taken = set(dev_ix)
    rest = train.subset([i for i in range(len(train)) if i not in taken])
    dev = train.subset(dev_ix)
    dev.name = "dev"
    return rest, dev


# --------------------------------------------------------------------------------------------- duplicates


def normalize_text(text: str) -> str:
    """NFKC, whitespace runs (incl. U+00A0) collapsed to one space, stripped: the key of duplicate detection."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def overlap_key(text: str) -> str:
    """The key that decides whether two texts are "the same tweet": :func:`normalize_text` with URLs removed and
    case folded (feeds re-post one headline with a new short link)."""
    return normalize_text(_URL.sub(" ", unicodedata.normalize("NFKC", text))).casefold()


def build_transfer(parts: Sequence[TextSplit], splits: dict[str, TextSplit], cap: int | None, seed: int,
                   source_caps: dict[str, int | None] | None = None, holdout: dict[str, int] | None = None,
                   ) -> tuple[TextSplit, dict[str, Any], TextSplit | None]:
    """The transfer set: unlabelled texts, whitespace-normalised, de-duplicated, without any text of ``splits``.

    Keys are :func:`overlap_key`. A text whose key is empty (a bare URL) is dropped; a repeat of an earlier
    transfer text is dropped; a text whose key occurs in one of ``splits`` (train, dev, eval) is dropped and counted
    under ``overlap_<split>`` (the first split that has it, in the given order). Then, per part name (source):
    ``holdout[name]`` texts are set aside (a seeded draw) for fidelity, and ``source_caps[name]`` keeps a seeded
    subset of the rest; last, ``cap`` keeps a seeded random subset of all that is left, in file order. Returns the
    split (``sources``: each kept text's part name), the counts (``read``, ``empty``, ``duplicate``, ``overlap_*``,
    ``held_out``, ``source_capped``, ``capped``, ``kept``, and per part name ``sources``: read, kept, held_out) and
    the held-out split (None when nothing is held out). Without holdouts and source caps, the result is what it was
    before they existed (caches keyed by these texts stay valid).
    """
    owners: dict[str, str] = {}
    for name, split in splits.items():
        for text in split.texts:
            owners.setdefault(overlap_key(text), name)
    report: dict[str, Any] = {"read": 0, "empty": 0, "duplicate": 0, **{f"overlap_{name}": 0 for name in splits},
                              "capped": 0}
    seen: set[str] = set()
    kept: list[str] = []
    origin: list[str] = []
    read: dict[str, int] = {}
    for part in parts:
        read[part.name] = read.get(part.name, 0) + len(part)
        for text in part.texts:
            report["read"] += 1
            key = overlap_key(text)
            if not key:
                report["empty"] += 1
            elif key in owners:
                report[f"overlap_{owners[key]}"] += 1
            elif key in seen:
                report["duplicate"] += 1
            else:
                seen.add(key)
                kept.append(normalize_text(text))
                origin.append(part.name)
    held: list[int] = []
    if any((holdout or {}).values()) or any(v is not None for v in (source_caps or {}).values()):
        drop: set[int] = set()
        for name in read:
            rows = [i for i, o in enumerate(origin) if o == name]
            order = [rows[j] for j in np.random.default_rng([seed, len(rows)]).permutation(len(rows))]
            n_hold = min((holdout or {}).get(name) or 0, len(rows))
            held += order[:n_hold]
            rest, limit = order[n_hold:], (source_caps or {}).get(name)
            if limit is not None and limit < len(rest):
                drop |= set(rest[limit:])
                report["source_capped"] = report.get("source_capped", 0) + len(rest) - limit
        held.sort()
        if held:
            report["held_out"] = len(held)
        drop |= set(held)
        left = [i for i in range(len(kept)) if i not in drop]
        held_texts, held_origin = [kept[i] for i in held], [origin[i] for i in held]
        kept, origin = [kept[i] for i in left], [origin[i] for i in left]
    else:
        held_texts, held_origin = [], []
    if cap is not None and cap < len(kept):
        chosen = sorted(np.random.default_rng(seed).permutation(len(kept))[:cap].tolist())
        report["capped"] = len(kept) - cap
        kept, origin = [kept[i] for i in chosen], [origin[i] for i in chosen]
    report["kept"] = len(kept)
    counts, held_counts = Counter(origin), Counter(held_origin)
    report["sources"] = {name: {"read": n, "kept": counts.get(name, 0),
                                **({"held_out": held_counts.get(name, 0)} if held_texts else {})}
                         for name, n in read.items()}
    held_split = TextSplit("holdout", held_texts, [-1] * len(held_texts), held_origin) if held_texts else None
    return TextSplit("transfer", kept, [-1] * len(kept), origin), report, held_split


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def load_transfer_source(ref: str, text_column: str, data_folder: str | None) -> list[TextSplit]:
    """The texts of one ``data.transfer_files`` entry (labels -1; any label column is ignored).

    A file or a folder of ``*.csv`` files: as given (absolute or from the working directory), else beside the data
    folder (``<data folder>/../<ref>``). A hub dataset id (``owner/name``) is read from a local copy beside the data
    folder (``<data folder>/../<name>/*.csv``) when there is one, else with ``datasets.load_dataset`` (every split).
    """
    path = Path(ref).expanduser()
    beside = Path(data_folder).expanduser().parent if data_folder else None
    candidates = [path] if path.is_absolute() else [path, *([beside / path] if beside else [])]
    if _HUB_ID.fullmatch(ref) and beside is not None:
        candidates.append(beside / ref.split("/")[1])
    for candidate in candidates:
        if candidate.is_file():
            return [load_unlabelled(candidate, text_column)]
        if candidate.is_dir() and sorted(candidate.glob("*.csv")):
            return [load_unlabelled(f, text_column) for f in sorted(candidate.glob("*.csv"))]
    if not _HUB_ID.fullmatch(ref) or path.suffix.lower() in (*TABLE_SUFFIXES, ".txt"):
        raise DataError(f"transfer file not found: {ref}")
    try:
        import datasets

        dsd = datasets.load_dataset(ref)
    except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one user-facing line
        raise DataError(f"cannot load transfer dataset {ref!r} from the hub ({first_line(err, with_type=True)})") \
            from None
    parts = []
    for split in dsd:
        rows, columns = _hub_rows(dsd[split])
        parts.append(TextSplit("transfer", _texts(rows, columns, text_column, Path(f"{ref}[{split}]")),
                               [-1] * len(rows)))
    return parts


def find_duplicates(splits: dict[str, TextSplit]) -> dict[str, Any]:
    """Duplicate report over normalised texts.

    ``counts["a/b"]``: distinct texts shared by splits a and b; ``examples["a/b"]``: a few of them (as in a);
    ``total``: the sum of ``counts``; ``within[a]``: rows of a repeating an earlier row of a (reported only).
    """
    keys: dict[str, dict[str, str]] = {role: {} for role in splits}
    within: dict[str, int] = {}
    for role, split in splits.items():
        for text in split.texts:
            keys[role].setdefault(normalize_text(text), text)
        within[role] = len(split) - len(keys[role])
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for a, b in combinations(list(splits), 2):
        shared = sorted(set(keys[a]) & set(keys[b]))
        counts[f"{a}/{b}"] = len(shared)
        if shared:
            examples[f"{a}/{b}"] = [keys[a][k] for k in shared[:MAX_DUPLICATE_EXAMPLES]]
    return {"counts": counts, "examples": examples, "total": sum(counts.values()), "within": within}


# --------------------------------------------------------------------------------------------- splits


def _tfns_folder(folder: Path, cfg: DataConfig) -> tuple[TextSplit, TextSplit]:
    for filename in TFNS_FILES.values():
        if not (folder / filename).is_file():
            raise DataError(f"data folder {folder} has no {filename} (expected {', '.join(TFNS_FILES.values())})")
    return tuple(  # type: ignore[return-value]
        load_table(folder / filename, cfg.text_column, cfg.label_column, cfg.label_map, split)
        for split, filename in TFNS_FILES.items()
    )


def _from_hub(cfg: DataConfig) -> tuple[TextSplit, TextSplit]:
    try:
        import datasets

        dsd = datasets.load_dataset(cfg.source)
    except Exception as err:  # noqa: BLE001 - any hub/network/import failure becomes one user-facing line
        raise DataError(f"cannot load dataset {cfg.source!r} from the hub ({first_line(err, with_type=True)}); "
                        f"set {DATA_DIR_ENV} or pass --data-dir to a folder with {' and '.join(TFNS_FILES.values())}") from None
    eval_name = next((s for s in ("validation", "test") if s in dsd), None)
    if "train" not in dsd or eval_name is None:
        raise DataError(f"dataset {cfg.source!r} needs train and validation splits, has {', '.join(dsd)}")
    train, evals = (
        _labelled(*_hub_rows(dsd[split]), cfg.text_column, cfg.label_column, cfg.label_map,
                  Path(f"{cfg.source}[{split}]"), split)
        for split in ("train", eval_name)
    )
    return train, evals


def _hub_rows(ds: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a ``datasets.Dataset`` (or a plain dict of columns)."""
    if hasattr(ds, "to_list"):
        return ds.to_list(), list(ds.column_names)
    return [dict(zip(ds, values)) for values in zip(*ds.values())], list(ds)


def _raw_splits(cfg: DataConfig, data_dir: str | None) -> tuple[str, TextSplit, TextSplit]:
    """(dataset name, train, eval) by the resolution order documented on :func:`load_splits`."""
    if cfg.train_file or cfg.eval_file:
        if not (cfg.train_file and cfg.eval_file):
            missing = "eval_file" if cfg.train_file else "train_file"
            raise DataError(f"data.{missing} is required when data.train_file or data.eval_file is set")
        train = load_table(cfg.train_file, cfg.text_column, cfg.label_column, cfg.label_map, "train")
        eval_path = Path(cfg.eval_file)
        evals = load_table(eval_path, cfg.text_column, cfg.label_column, cfg.label_map, eval_path.stem)
        return Path(cfg.train_file).stem, train, evals
    source = Path(cfg.source).expanduser()
    if source.is_dir():
        return source.name, *_tfns_folder(source, cfg)
    if cfg.source.startswith((".", "/", "~")) or source.is_file():
        raise DataError(f"data.source {cfg.source!r} is not a folder (set data.train_file/eval_file for files)")
    folder = data_dir or os.environ.get(DATA_DIR_ENV)
    if cfg.source == TFNS_HUB_ID and folder:
        return TFNS_HUB_ID, *_tfns_folder(Path(folder).expanduser(), cfg)
    return cfg.source, *_from_hub(cfg)


def _check_classes(train: TextSplit, name: str) -> None:
    """Every canonical class needs two training texts (one can go to the dev split); refuse before any model loads."""
    counts = Counter(train.labels)
    short = [f"{label} ({counts.get(i, 0)})" for i, label in enumerate(LABELS) if counts.get(i, 0) < 2]
    if short:
        raise DataError(f"training data of {name!r} needs at least 2 texts of every class; too few: {', '.join(short)}")


def load_splits(cfg: DataConfig, data_dir: str | None = None) -> DatasetSplits:
    """Load train/dev/eval (+ transfer) for a run.

    Resolution: ``cfg.train_file`` + ``cfg.eval_file``; else ``cfg.source`` as a local TFNS-layout folder; else, for
    the TFNS hub id, ``data_dir`` or ``$FINDISTILL_DATA_DIR``; else ``datasets.load_dataset(cfg.source)``.
    """
    name, train, evals = _raw_splits(cfg, data_dir)
    _check_classes(train, name)
    train, dev = split_dev(train, cfg.dev_fraction, cfg.seed)
    train = stratified_subsample(train, cfg.max_train_examples, cfg.seed)
    dev = stratified_subsample(dev, cfg.max_dev_examples, cfg.seed)
    evals = stratified_subsample(evals, cfg.max_eval_examples, cfg.seed)
    transfer, transfer_report, holdout = None, {}, None
    if cfg.transfer_files:
        # the folder TFNS was read from (as in _raw_splits: a source folder wins over --data-dir / the env var)
        folder = cfg.source if Path(cfg.source).expanduser().is_dir() else (data_dir or os.environ.get(DATA_DIR_ENV))
        entries = cfg.transfer_entries()
        parts = [replace(part, name=entry.label) for entry in entries
                 for part in load_transfer_source(entry.path, cfg.text_column, folder)]
        # a text in several splits counts as a leak into the first of these: evaluation, dev, train
        transfer, transfer_report, holdout = build_transfer(
            parts, {"eval": evals, "dev": dev, "train": train}, cfg.max_transfer_examples, cfg.seed,
            source_caps={e.label: e.max_examples for e in entries},
            holdout={e.label: cfg.transfer_holdout if e.holdout is None else e.holdout for e in entries})
        logger.info("transfer texts: %d kept of %d read (%s)", transfer_report["kept"], transfer_report["read"],
                    ", ".join(f"{k} {v}" for k, v in transfer_report.items()
                              if k not in ("read", "kept", "sources") and v))
    roles = {"train": train, "dev": dev, "eval": evals, "transfer": transfer}
    duplicates = find_duplicates({role: split for role, split in roles.items() if split is not None})
    if duplicates["total"]:
        found = {k: v for k, v in duplicates["counts"].items() if v}
        logger.warning("duplicate texts across splits after whitespace/NFKC normalisation (kept, not dropped): "
                       "%s; e.g. %r", found, next(iter(duplicates["examples"].values()))[0])
    if any(duplicates["within"].values()):
        logger.info("repeated texts within splits (kept): %s", duplicates["within"])
    return DatasetSplits(name, train, dev, evals, transfer, duplicates, transfer_report, holdout)
