"""inference: length-sorted batches with the input order restored, text batching through a tokenizer, the pad-token
fallback."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import build_tokenizer
from findistill.errors import ModelError
from findistill.models.inference import ensure_pad_token, predict_texts, run_batches, sorted_batches


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"), "causal")  # adds no special tokens: "" encodes to []


def test_sorted_batches_run_longest_first_and_keep_ties_in_input_order():
    batches = sorted_batches([2, 5, 5, 1, 3], batch_size=2)
    assert [b.tolist() for b in batches] == [[1, 2], [4, 0], [3]]
    with pytest.raises(ValueError, match="batch_size"):
        sorted_batches([1], batch_size=0)


def test_run_batches_restores_the_input_order():
    lengths = [3, 9, 1, 7, 7, 2]
    seen = []

    def forward(idx):
        seen.append(idx.tolist())
        return np.stack([idx * 10.0, idx + 0.5], axis=1)  # [B, 2], row = f(its own index)

    out = run_batches(lengths, 4, 2, forward, progress=False)
    assert seen == [[1, 3, 4, 0], [5, 2]]
    assert out.dtype == np.float32 and out.shape == (6, 2)
    np.testing.assert_array_equal(out[:, 0], np.arange(6) * 10.0)
    np.testing.assert_array_equal(out[:, 1], np.arange(6) + 0.5)
    assert run_batches([], 4, 3, forward, progress=False).shape == (0, 3)


def test_run_batches_with_workers_runs_batches_at_once_and_keeps_the_order():
    import threading

    lengths = [3, 9, 1, 7, 7, 2, 4, 4, 8]
    both_running = threading.Barrier(2, timeout=10)  # the first and the last batch wait for each other: run one
    threads = set()

    def forward(idx):
        if 1 in idx.tolist() or 2 in idx.tolist():  # after the other (serially), the wait times out
            both_running.wait()
        threads.add(threading.current_thread().name)
        return np.stack([idx * 10.0, idx + 0.5], axis=1)

    batches = [b.tolist() for b in sorted_batches(lengths, 2)]
    assert 1 in batches[0] and 2 in batches[-1] and len(batches) == 5
    out = run_batches(lengths, 2, 2, forward, progress=False, workers=2)
    np.testing.assert_array_equal(out[:, 0], np.arange(9) * 10.0)
    np.testing.assert_array_equal(out[:, 1], np.arange(9) + 0.5)
    assert len(threads) == 2 and all(name.startswith("findistill-batch") for name in threads)
    with pytest.raises(ValueError, match="workers"):
        run_batches(lengths, 2, 2, forward, progress=False, workers=0)


def test_run_batches_with_workers_passes_a_failure_on():
    def forward(idx):
        if 0 in idx.tolist():
            raise RuntimeError("batch failed")
        return np.zeros((len(idx), 1))

    with pytest.raises(RuntimeError, match="batch failed"):
        run_batches([1, 2, 3, 4, 5, 6], 2, 1, forward, progress=False, workers=2)


def test_predict_texts_pads_each_batch_and_keeps_the_order(tokenizer):
    texts = ["stocks rally", "", "the company reported a loss in the third quarter", "shares fell"]
    real = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert real[1] == 0
    tokenizer.padding_side = "left"
    batches = []

    def forward(batch):
        ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
        batches.append(ids)
        return np.stack([mask.sum(axis=1), ids[:, -1]], axis=1)  # [B, 2]: real tokens, last (left-padded) id

    out = predict_texts(tokenizer, texts, max_length=64, batch_size=3, width=2, forward=forward, progress=False)
    assert out[:, 0].tolist() == [real[0], 1, real[2], real[3]]  # the empty text is one token, not all padding
    assert out[1, 1] == tokenizer.unk_token_id
    assert out[0, 1] == tokenizer(texts[0])["input_ids"][-1]
    assert [len(b) for b in batches] == [3, 1]
    assert batches[0][:, 0].tolist().count(tokenizer.pad_token_id) == 2  # left padding in the first (longest) batch
    cut = predict_texts(tokenizer, texts, max_length=3, batch_size=2, width=2, forward=forward, progress=False)
    assert cut[2, 0] == 3
    assert predict_texts(tokenizer, [], 8, 2, 2, forward).shape == (0, 2)


def test_predict_texts_needs_a_pad_token(tmp_path):
    tok = build_tokenizer(tmp_path, "causal")
    tok.pad_token = None
    with pytest.raises(ModelError, match="no pad token"):
        predict_texts(tok, ["a b", "c"], 8, 2, 1, lambda batch: np.zeros((2, 1)))


def test_ensure_pad_token_falls_back_to_eos_then_unk(tmp_path):
    tok = build_tokenizer(tmp_path, "causal")
    tok.pad_token = None
    model = SimpleNamespace(config=SimpleNamespace(pad_token_id=None))
    ensure_pad_token(tok, model)
    assert tok.pad_token == "</s>" and model.config.pad_token_id == tok.eos_token_id
    kept = SimpleNamespace(config=SimpleNamespace(pad_token_id=7))
    ensure_pad_token(tok, kept)
    assert kept.config.pad_token_id == 7

    tok.pad_token, tok.eos_token = None, None
    ensure_pad_token(tok)
    assert tok.pad_token == "<unk>"
    tok.pad_token, tok.unk_token = None, None
    with pytest.raises(ModelError, match="student 'x': the tokenizer has no pad, eos or unk token"):
        ensure_pad_token(tok, owner="student 'x'")
