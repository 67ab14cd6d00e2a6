"""Tests of findistill.data.splits: TFNS folders, table formats, label mapping, dev split, subsampling, duplicates."""

from __future__ import annotations

import csv
import json
import logging
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_rows, write_tfns_folder

from findistill.config import LABEL2ID, TFNS_HUB_ID, DataConfig
from findistill.data.splits import (
    DatasetSplits,
    TextSplit,
    build_transfer,
    load_splits,
    load_table,
    load_unlabelled,
    normalize_text,
    overlap_key,
    stratified_folds,
    stratified_subsample,
)
from findistill.errors import DataError

NEG, NEU, POS = LABEL2ID["negative"], LABEL2ID["neutral"], LABEL2ID["positive"]
NAMED_MAP = {"bearish": "negative", "bullish": "positive", "neutral": "neutral"}
NAMED_ROWS = [("$AAPL plunges", "bearish"), ("$TSLA soars", "bullish"), ("$XYZ files report", "neutral"),
              ("Nomura cut to sell", "bearish")]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- TFNS layout


def test_tfns_folder_maps_labels_and_splits(tiny_tfns_dir):
    splits = load_splits(DataConfig(source=str(tiny_tfns_dir)))
    assert isinstance(splits, DatasetSplits)
    assert len(splits.train) + len(splits.dev) == 60 and len(splits.dev) == 6
    assert len(splits.eval) == 24 and splits.eval.name == "validation"
    assert splits.transfer is None
    tfns_to_canonical = {0: NEG, 1: POS, 2: NEU}  # 0 Bearish, 1 Bullish, 2 Neutral
    expected = {text: tfns_to_canonical[y] for text, y in make_rows(60, 1)}
    for text, label in zip(splits.train.texts + splits.dev.texts, splits.train.labels + splits.dev.labels):
        assert expected[text] == label
    assert set(splits.train.texts).isdisjoint(splits.dev.texts)
    assert splits.eval.label_counts() == {"negative": 6, "neutral": 12, "positive": 6}


def test_dev_split_stratified_disjoint_and_seeded(tmp_path):
    folder = write_tfns_folder(tmp_path / "tfns", n_train=200, n_valid=12)
    first = load_splits(DataConfig(source=str(folder), dev_fraction=0.2, seed=1))
    again = load_splits(DataConfig(source=str(folder), dev_fraction=0.2, seed=1))
    other = load_splits(DataConfig(source=str(folder), dev_fraction=0.2, seed=2))
    assert first.dev.texts == again.dev.texts and first.train.texts == again.train.texts
    assert first.dev.texts != other.dev.texts
    assert len(first.dev) == 40 and set(first.dev.texts).isdisjoint(first.train.texts)
    # train labels are 50% neutral, 25% negative, 25% positive -> exactly 20/10/10 in the dev split
    assert first.dev.label_counts() == {"negative": 10, "neutral": 20, "positive": 10}
    assert sorted(first.train.texts + first.dev.texts) == sorted(t for t, _ in make_rows(200, 1))


def test_caps_are_stratified_subsamples(tmp_path):
    folder = write_tfns_folder(tmp_path / "tfns", n_train=200, n_valid=40)
    cfg = DataConfig(source=str(folder), max_train_examples=20, max_dev_examples=8, max_eval_examples=12)
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.dev), len(splits.eval)) == (20, 8, 12)
    assert splits.eval.label_counts() == {"negative": 3, "neutral": 6, "positive": 3}
    assert splits.info()["n"] == 12 and splits.info()["n_train"] == 20


def test_env_data_dir_resolves_hub_id(tiny_tfns_dir, monkeypatch):
    monkeypatch.setenv("FINDISTILL_DATA_DIR", str(tiny_tfns_dir))
    splits = load_splits(DataConfig(source=TFNS_HUB_ID))
    assert splits.name == TFNS_HUB_ID and len(splits.eval) == 24


def test_data_dir_argument_wins_over_env(tiny_tfns_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FINDISTILL_DATA_DIR", str(tmp_path / "nowhere"))
    assert len(load_splits(DataConfig(), data_dir=str(tiny_tfns_dir)).eval) == 24


def test_data_dir_without_tfns_files_is_error(tmp_path):
    with pytest.raises(DataError, match="sent_train.csv") as err:
        load_splits(DataConfig(), data_dir=str(tmp_path))
    _one_line(err)


def _fake_datasets(monkeypatch, load_dataset) -> None:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_failure_suggests_data_dir(monkeypatch):
    monkeypatch.delenv("FINDISTILL_DATA_DIR", raising=False)

    def offline(name):
        raise ConnectionError(f"Couldn't reach {name}\nsecond line")

    _fake_datasets(monkeypatch, offline)
    with pytest.raises(DataError, match="FINDISTILL_DATA_DIR") as err:
        load_splits(DataConfig())
    assert "--data-dir" in _one_line(err)


def test_hub_dataset_is_converted(monkeypatch):
    monkeypatch.delenv("FINDISTILL_DATA_DIR", raising=False)
    rows = make_rows(40, 3)
    columns = {"text": [t for t, _ in rows], "label": [y for _, y in rows]}
    _fake_datasets(monkeypatch, lambda name: {"train": columns, "validation": columns})
    splits = load_splits(DataConfig())
    assert splits.name == TFNS_HUB_ID and splits.eval.name == "validation"
    assert splits.eval.label_counts() == {"negative": 10, "neutral": 20, "positive": 10}
    assert splits.duplicates["total"] > 0  # train and validation are the same rows here


# --------------------------------------------------------------------------------------------- table formats


def test_csv_with_crlf_and_embedded_newlines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'text,label\r\n"line one\nline two",0\r\nplain,1\r\n"a, quoted ""x""",2\r\n')
    split = load_table(path, "text", "label", {"0": "negative", "1": "positive", "2": "neutral"}, "t")
    assert split.texts == ["line one\nline two", "plain", 'a, quoted "x"']
    assert split.labels == [NEG, POS, NEU]


def test_jsonl_custom_columns_and_named_labels(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"sentence": t, "sentiment": y, "id": i}
                                              for i, (t, y) in enumerate(NAMED_ROWS)])
    split = load_table(path, "sentence", "sentiment", NAMED_MAP, "mine")
    assert split.name == "mine" and split.texts[1] == "$TSLA soars"
    assert split.labels == [NEG, POS, NEU, NEG]
    assert split.label_counts() == {"negative": 2, "neutral": 1, "positive": 1}


def test_json_array_and_integer_labels(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"text": "a", "label": 1}, {"text": "b", "label": 2.0}]), encoding="utf-8")
    split = load_table(path, "text", "label", {"1": "positive", "2": "neutral"}, "t")
    assert split.labels == [POS, NEU]


def test_parquet_custom_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    table = pa.table({"body": [t for t, _ in NAMED_ROWS], "tag": [y for _, y in NAMED_ROWS]})
    pq.write_table(table, path)
    assert load_table(path, "body", "tag", NAMED_MAP, "p").labels == [NEG, POS, NEU, NEG]


def test_tsv_and_label_case_is_tolerated(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("tweet\tlab\n" + "".join(f"{t}\t{y.title()}\n" for t, y in NAMED_ROWS), encoding="utf-8")
    split = load_table(path, "tweet", "lab", NAMED_MAP, "t")
    assert split.labels == [NEG, POS, NEU, NEG]


def test_explicit_files_override_source(tmp_path):
    rows = [{"s": f"{t} #{i}", "y": y} for i in range(10) for t, y in NAMED_ROWS]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    evals = _write_jsonl(tmp_path / "test.jsonl", rows[:8])
    cfg = DataConfig(source="not/a-dataset", train_file=str(train), eval_file=str(evals),
                     text_column="s", label_column="y", label_map=NAMED_MAP)
    splits = load_splits(cfg)
    assert len(splits.train) + len(splits.dev) == 40 and len(splits.eval) == 8
    assert splits.eval.name == "test"


def test_train_file_needs_eval_file(tmp_path):
    with pytest.raises(DataError, match="eval_file") as err:
        load_splits(DataConfig(train_file=str(tmp_path / "train.csv")))
    _one_line(err)


def test_unknown_label_is_error(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "bearish"}, {"text": "y", "label": "meh"}])
    with pytest.raises(DataError) as err:
        load_table(path, "text", "label", NAMED_MAP, "bad")
    message = _one_line(err)
    assert "'meh'" in message and "bad.jsonl" in message and "row 2" in message


def test_tfns_label_outside_map_is_error(tiny_tfns_dir):
    with pytest.raises(DataError, match="sent_train.csv: row 1: label value '2'") as err:
        load_splits(DataConfig(source=str(tiny_tfns_dir), label_map={"0": "negative", "1": "positive"}))
    _one_line(err)


@pytest.mark.parametrize("column", ["text", "label"])
def test_missing_column_is_error(tmp_path, column):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,0\n", encoding="utf-8")
    kwargs = {"text_column": "text", "label_column": "label", column + "_column": "sentence"}
    with pytest.raises(DataError) as err:
        load_table(path, label_map={"0": "negative"}, name="t", **kwargs)
    message = _one_line(err)
    assert "'sentence'" in message and "t.csv" in message


def test_empty_text_empty_file_missing_file(tmp_path):
    blank = tmp_path / "blank.csv"
    blank.write_text('text,label\nok,0\n"  ",0\n', encoding="utf-8")
    with pytest.raises(DataError, match="row 2: empty text in column 'text'"):
        load_table(blank, "text", "label", {"0": "negative"}, "b")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_table(empty, "text", "label", {"0": "negative"}, "e")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_table(header_only, "text", "label", {"0": "negative"}, "h")
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "missing.csv", "text", "label", {"0": "negative"}, "m")
    with pytest.raises(DataError, match="unsupported"):
        (tmp_path / "x.xlsx").write_text("x")
        load_table(tmp_path / "x.xlsx", "text", "label", {}, "x")


# --------------------------------------------------------------------------------------------- transfer, duplicates


def test_transfer_txt_and_csv(tmp_path, tiny_tfns_dir):
    txt = tmp_path / "transfer.txt"
    txt.write_text("first headline\n\n  \nsecond headline\r\nthird\n", encoding="utf-8")
    split = load_unlabelled(txt)
    assert split.texts == ["first headline", "second headline", "third"] and split.labels == [-1, -1, -1]
    assert split.label_counts()["unlabelled"] == 3
    other = tmp_path / "more.csv"
    other.write_text("text\nfrom csv\n", encoding="utf-8")
    splits = load_splits(DataConfig(source=str(tiny_tfns_dir), transfer_files=[str(txt), str(other)]))
    assert splits.transfer is not None and len(splits.transfer) == 4
    assert set(splits.transfer.labels) == {-1} and splits.info()["n_transfer"] == 4
    with pytest.raises(DataError, match="no non-blank lines"):
        (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
        load_unlabelled(tmp_path / "blank.txt")


def test_duplicates_across_splits_are_reported_not_dropped(tmp_path, caplog):
    folder = write_tfns_folder(tmp_path / "tfns", n_train=40, n_valid=8)
    planted = "Almost 40% of oil producers face insolvency"
    with open(folder / "sent_valid.csv", "a", encoding="utf-8", newline="") as fh:
        fh.write(f"{planted.replace(' of ', ' of' + chr(0xA0))},0\r\n")
    with open(folder / "sent_train.csv", "a", encoding="utf-8", newline="") as fh:
        fh.write(f"{planted},0\r\n")
    with caplog.at_level(logging.WARNING, logger="findistill.data.splits"):
        splits = load_splits(DataConfig(source=str(folder)))
    assert len(splits.train) + len(splits.dev) == 41 and len(splits.eval) == 9  # nothing dropped
    counts = splits.duplicates["counts"]
    in_train = any(normalize_text(t) == planted for t in splits.train.texts)
    side = "train" if in_train else "dev"
    assert counts[f"{side}/eval"] == 1
    assert splits.duplicates["examples"][f"{side}/eval"] == [planted]  # the eval copy differs by a U+00A0
    assert "duplicate texts across splits" in caplog.text
    json.dumps(splits.info())


def test_normalize_text():
    assert normalize_text("a\u00a0b  c\t\n") == normalize_text(" a b c") == "a b c"
    assert normalize_text("ＡＢＣ") == "ABC"


# --------------------------------------------------------------------------------------------- helpers


def test_stratified_subsample_and_majority():
    split = TextSplit("s", [f"t{i}" for i in range(100)], [NEU] * 60 + [NEG] * 25 + [POS] * 15)
    sub = stratified_subsample(split, 20, seed=0)
    assert sub.label_counts() == {"negative": 5, "neutral": 12, "positive": 3}
    assert sub.texts == stratified_subsample(split, 20, seed=0).texts
    assert sub.texts != stratified_subsample(split, 20, seed=1).texts
    assert stratified_subsample(split, 500, seed=0).texts == split.texts
    tiny = stratified_subsample(split, 3, seed=0)
    assert sorted(tiny.labels) == [NEG, NEU, POS]  # every class kept when n allows
    assert len(split.subset([3, 1])) == 2 and split.subset([3, 1]).texts == ["t3", "t1"]


# --------------------------------------------------------------------------------------------- real TFNS files


def test_real_tfns_files(shared_tfns_dir):
    splits = load_splits(DataConfig(source=str(shared_tfns_dir)))
    assert len(splits.train) + len(splits.dev) == 9543 and len(splits.eval) == 2388
    assert len(splits.dev) == 954
    assert splits.eval.label_counts() == {"negative": 347, "neutral": 1566, "positive": 475}
    combined = Counter(splits.train.labels + splits.dev.labels)
    assert (combined[NEG], combined[POS], combined[NEU]) == (1442, 1923, 6178)
    assert sum("\n" in t for t in splits.eval.texts) == 43  # embedded bare-LF newlines survive
    assert sum("\n" in t for t in splits.train.texts + splits.dev.texts) == 184
    counts = splits.duplicates["counts"]
    assert counts["train/eval"] + counts["dev/eval"] == 1  # the U+00A0 near-duplicate of PROVENANCE.txt
    examples = [t for key in ("train/eval", "dev/eval") for t in splits.duplicates["examples"].get(key, [])]
    assert examples[0].startswith("Almost 40% of\xa0oil")
    info = json.loads(json.dumps(splits.info()))
    assert info["split"] == "validation" and info["n"] == 2388 and info["n_train"] == 8589


def test_source_path_that_is_not_a_folder_is_error(tmp_path):
    with pytest.raises(DataError, match="is not a folder") as err:
        load_splits(DataConfig(source=str(tmp_path / "missing")))
    _one_line(err)


# --------------------------------------------------------------------------------------------- transfer set


def test_transfer_texts_overlapping_dev_or_eval_are_dropped_and_counted(tmp_path):
    folder = write_tfns_folder(tmp_path / "data" / "tfns", n_train=40, n_valid=8)
    splits = load_splits(DataConfig(source=str(folder)))
    dev_text, eval_text, train_text = splits.dev.texts[0], splits.eval.texts[0], splits.train.texts[0]
    rows = [
        f"{dev_text.upper()}  https://t.co/abc",            # dev text, other case, extra spaces and a URL
        f"  {eval_text}\thttp://t.co/xyz ",                 # evaluation text with a URL
        train_text,                                          # a gold training text
        "Fed  holds rates   https://t.co/1",                 # kept, whitespace collapsed
        "fed holds rates https://t.co/2",                    # the same tweet re-posted with a new link
        "https://t.co/only-a-link",                          # nothing left once the URL goes
        "Oil rallies as supply tightens",
    ]
    (tmp_path / "data" / "topic").mkdir()
    with open(tmp_path / "data" / "topic" / "t.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])  # a topic id, never read as a sentiment
        writer.writerows([(r, 7) for r in rows])
    # a relative path is read beside the data folder when it is not under the working directory
    splits = load_splits(DataConfig(source=str(folder), transfer_files=["topic/t.csv"]), data_dir=str(folder))
    assert splits.transfer.texts == ["Fed holds rates https://t.co/1", "Oil rallies as supply tightens"]
    assert splits.transfer.labels == [-1, -1]
    report = splits.transfer_report
    assert report == {"read": 7, "empty": 1, "duplicate": 1, "overlap_eval": 1, "overlap_dev": 1,
                      "overlap_train": 1, "capped": 0, "kept": 2, "sources": {"topic/t.csv": {"read": 7, "kept": 2}}}
    assert splits.transfer.sources == ["topic/t.csv", "topic/t.csv"]
    info = splits.info()
    assert info["n_transfer"] == 2 and info["transfer"]["overlap_eval"] == 1
    json.dumps(info)


def test_transfer_cap_is_a_seeded_subset_in_file_order():
    parts = [TextSplit("t", [f"headline number {i}" for i in range(50)], [-1] * 50)]
    a, rep, _ = build_transfer(parts, {}, cap=10, seed=3)
    b, _, _ = build_transfer(parts, {}, cap=10, seed=3)
    c, _, _ = build_transfer(parts, {}, cap=10, seed=4)
    assert a.texts == b.texts and a.texts != c.texts and len(a) == 10
    assert a.texts == sorted(a.texts, key=lambda t: int(t.rsplit(" ", 1)[1]))
    assert rep["capped"] == 40 and rep["kept"] == 10


def test_transfer_sources_are_counted_and_kept_beside_each_text():
    parts = [TextSplit("tweets", [f"tweet {i}" for i in range(30)], [-1] * 30),
             TextSplit("headlines", [f"headline {i}" for i in range(10)] + ["tweet 3"], [-1] * 11)]
    split, rep, _ = build_transfer(parts, {}, cap=20, seed=0)
    assert len(split.sources) == len(split) == 20
    assert all(src == text.split()[0] + "s" for src, text in zip(split.sources, split.texts))
    assert rep["sources"]["tweets"]["read"] == 30 and rep["sources"]["headlines"]["read"] == 11
    assert rep["sources"]["tweets"]["kept"] + rep["sources"]["headlines"]["kept"] == 20
    assert split.subset([0, 1]).sources == split.sources[:2]


def test_a_source_the_teacher_labels_nearly_all_one_class_is_warned_about():
    import numpy as np

    from findistill.evaluation.metrics import source_warnings, transfer_source_labels

    logits = np.eye(3)[[1] * 97 + [0, 2, 2] + [0, 1, 2] * 10]  # source a: 97% neutral; source b: balanced
    labels = transfer_source_labels(["a"] * 100 + ["b"] * 30, logits)
    assert labels == {"a": {"negative": 1, "neutral": 97, "positive": 2},
                      "b": {"negative": 10, "neutral": 10, "positive": 10}}
    assert source_warnings(labels) == ["transfer source 'a': the teacher calls 97% of its 100 texts 'neutral', so it "
                                       "teaches the student little beyond that class"]


def test_overlap_key_normalises_case_whitespace_and_urls():
    assert overlap_key("$TSLA  Soars\u00a0https://t.co/x") == overlap_key("$tsla soars www.example.com/a") == "$tsla soars"


def test_stratified_folds_cover_every_row_once_and_keep_proportions():
    labels = [NEU] * 30 + [NEG] * 12 + [POS] * 9
    folds = stratified_folds(labels, 3, seed=0)
    flat = sorted(i for fold in folds for i in fold)
    assert flat == list(range(len(labels)))
    for fold in folds:
        counts = Counter(labels[i] for i in fold)
        assert counts[NEU] == 10 and counts[NEG] == 4 and counts[POS] == 3
    assert folds == stratified_folds(labels, 3, seed=0) and folds != stratified_folds(labels, 3, seed=1)
    with pytest.raises(DataError, match="positive"):
        stratified_folds([NEU] * 10 + [POS], 2, seed=0)


def test_transfer_hub_id_reads_a_local_copy_beside_the_data_folder_else_the_hub(tmp_path, monkeypatch):
    folder = write_tfns_folder(tmp_path / "data" / "tfns", n_train=40, n_valid=8)
    copy = tmp_path / "data" / "news-topic"
    copy.mkdir()
    (copy / "b_valid.csv").write_text("text,label\nOil rallies as supply tightens,3\n")
    (copy / "a_train.csv").write_text("text,label\nFed holds rates,1\n")

    def no_hub(name):
        raise AssertionError("the local copy must win")

    _fake_datasets(monkeypatch, no_hub)
    cfg = DataConfig(source=str(folder), transfer_files=["someone/news-topic"])
    assert load_splits(cfg).transfer.texts == ["Fed holds rates", "Oil rallies as supply tightens"]

    hub = {"train": {"text": ["Gold slips"], "label": [2]}, "validation": {"text": ["Bonds rally"], "label": [0]}}
    _fake_datasets(monkeypatch, lambda name: hub if name == "someone/other-topic" else no_hub(name))
    cfg = DataConfig(source=str(folder), transfer_files=["someone/other-topic"])
    assert load_splits(cfg).transfer.texts == ["Gold slips", "Bonds rally"]
    with pytest.raises(DataError, match="transfer file not found: missing.csv"):
        load_splits(DataConfig(source=str(folder), transfer_files=["missing.csv"]))


def test_held_out_slices_and_source_caps_are_seeded_per_source_and_never_in_the_transfer_set():
    parts = [TextSplit("tweets", [f"tweet {i}" for i in range(40)], [-1] * 40),
             TextSplit("headlines", [f"headline {i}" for i in range(12)], [-1] * 12)]
    split, rep, held = build_transfer(parts, {}, cap=None, seed=1, source_caps={"tweets": 20, "headlines": None},
                                      holdout={"tweets": 5, "headlines": 4})
    assert set(held.texts).isdisjoint(split.texts)
    assert sorted(held.sources) == ["headlines"] * 4 + ["tweets"] * 5
    assert rep["sources"] == {"tweets": {"read": 40, "kept": 20, "held_out": 5},
                              "headlines": {"read": 12, "kept": 8, "held_out": 4}}
    assert rep["held_out"] == 9 and rep["source_capped"] == 15 and rep["kept"] == 28 == len(split)
    again, _, held_again = build_transfer(parts, {}, cap=None, seed=1, source_caps={"tweets": 20},
                                          holdout={"tweets": 5, "headlines": 4})
    assert again.texts == split.texts and held_again.texts == held.texts
    other, _, held_other = build_transfer(parts, {}, cap=None, seed=2, source_caps={"tweets": 20},
                                          holdout={"tweets": 5, "headlines": 4})
    assert held_other.texts != held.texts
    # no holdout and no per-source cap: exactly the transfer set of before (the caches keyed by it stay valid)
    plain, plain_rep, none = build_transfer(parts, {}, cap=30, seed=1, source_caps={"tweets": None},
                                            holdout={"tweets": 0})
    old, old_rep, _ = build_transfer(parts, {}, cap=30, seed=1)
    assert none is None and plain.texts == old.texts and plain_rep == old_rep


def test_named_transfer_sources_and_the_string_form_read_the_same_texts(tmp_path, tiny_tfns_dir):
    folder = tiny_tfns_dir
    (tmp_path / "h.txt").write_text("\n".join(f"Stocks move on headline {i}" for i in range(12)) + "\n")
    as_string = load_splits(DataConfig(source=str(folder), transfer_files=[str(tmp_path / "h.txt")]))
    named = load_splits(_data_config(folder, [
        {"path": str(tmp_path / "h.txt"), "name": "headlines", "holdout": 3, "max_examples": 5}]))
    assert as_string.holdout is None and len(as_string.transfer) == 12
    assert len(named.transfer) == 5 and len(named.holdout) == 3 and set(named.transfer.sources) == {"headlines"}
    assert set(named.holdout.texts).isdisjoint(named.transfer.texts)
    assert set(named.holdout.texts) | set(named.transfer.texts) <= set(as_string.transfer.texts)


def _data_config(folder, transfer_files, **keys):
    from findistill.config import from_dict

    return from_dict(DataConfig, {"source": str(folder), "transfer_files": transfer_files, **keys})


def test_transfer_source_entries_are_checked_by_key():
    from findistill.config import ConfigError

    with pytest.raises(ConfigError, match=r"transfer_files\[0\].cap: unknown key"):
        _data_config("x", [{"path": "a.txt", "cap": 3}])
    with pytest.raises(ConfigError, match="source names must be unique"):
        _data_config("x", ["a.txt", {"path": "b.txt", "name": "a.txt"}])
    with pytest.raises(ConfigError, match="transfer_holdout: must be >= 0"):
        _data_config("x", [], transfer_holdout=-1)
