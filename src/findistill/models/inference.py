"""Batched inference shared by the training side and the deployment side (runtime, export, predict, serve).

Texts or prompts run in batches of similar token length (little padding), longest first (an out-of-memory error
shows up on the first batch), and the results come back in input order. The pad-token fallback lives here too.
Imports numpy and tqdm only (each caller brings its own engine: torch or onnxruntime), so the deployment side
loads no training code through it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from findistill.errors import ModelError


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, longest first (ties keep their input order)."""
    _check_batch_size(batch_size)
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def run_batches(lengths: Sequence[int], batch_size: int, width: int, forward: Callable[[np.ndarray], Any],
                progress: bool | None = True, desc: str | None = None, workers: int = 1) -> np.ndarray:
    """``[N, width]`` float32 in input order: ``forward(indices)`` returns the ``[B, width]`` rows of one batch of
    :func:`sorted_batches`. A progress bar (``desc``) counts the rows when ``progress`` is True; None shows it on a
    terminal only and clears it when done (the dev evaluations repeated during training).

    ``workers > 1`` runs that many batches at once on a thread pool (``forward`` must then be thread-safe and
    release the GIL while it computes, as an onnxruntime session does); the rows land in the same places.
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from tqdm.auto import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    batches = sorted_batches(lengths, batch_size)
    out = np.zeros((len(lengths), width), dtype=np.float32)
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(lengths), desc=desc, unit="text", leave=bool(progress),
                                       disable=None if progress is None else not progress))
        if workers > 1 and len(batches) > 1:
            pool = ThreadPoolExecutor(min(workers, len(batches)), thread_name_prefix="findistill-batch")
            stack.callback(pool.shutdown, cancel_futures=True)  # a failed batch cancels the ones not started
            results = pool.map(forward, batches)  # results in batch order
        else:
            results = map(forward, batches)
        for idx, rows in zip(batches, results):
            out[idx] = np.asarray(rows, dtype=np.float32)
            bar.update(len(idx))
    return out


def predict_texts(tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int, width: int,
                  forward: Callable[[Any], Any], return_tensors: str = "np", progress: bool | None = True,
                  desc: str | None = None, workers: int = 1) -> np.ndarray:
    """``[N, width]`` float32 in the order of ``texts``: each text tokenized once (cut to ``max_length``), then
    ``forward(batch)`` on every length-sorted batch, padded by ``tokenizer.pad`` (on ``tokenizer.padding_side``)
    into ``return_tensors`` ("np" or "pt").

    A text that encodes to no tokens (an empty text, with a tokenizer that adds no special tokens) becomes one
    unk / eos / bos / pad token, so that no row is all padding. ``workers``: as in :func:`run_batches` (each
    worker pads its own batch; ``tokenizer.pad`` keeps no state between calls).
    """
    _check_batch_size(batch_size)
    texts = list(texts)
    if not texts:
        return np.zeros((0, width), dtype=np.float32)
    if tokenizer.pad_token is None:
        raise ModelError("tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    columns = {key: list(encoded[key]) for key in encoded.keys()}
    ids = columns["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            for key, values in columns.items():
                values[i] = [_filler_token_id(tokenizer) if key == "input_ids" else int(key == "attention_mask")]

    def run(idx: np.ndarray) -> Any:
        return forward(tokenizer.pad({key: [values[i] for i in idx] for key, values in columns.items()},
                                     return_tensors=return_tensors))

    return run_batches([len(row) for row in ids], batch_size, width, run, progress=progress, desc=desc,
                       workers=workers)


def _filler_token_id(tokenizer: Any) -> int:
    for value in (tokenizer.unk_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id):
        if value is not None:
            return int(value)
    return 0


def ensure_pad_token(tokenizer: Any, model: Any = None, owner: str = "model") -> None:
    """Give ``tokenizer`` a pad token when it has none: its eos token, else its unk token (padded positions are
    masked out, so which one does not matter); and ``model.config.pad_token_id`` the tokenizer's when it is unset
    (a decoder-only classifier pools the last token that is not padding). One-line ``ModelError`` naming ``owner``
    when the tokenizer has none of these tokens."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"{owner}: the tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``[N, C]`` logits, ``softmax(logits / temperature)`` (float64, rows sum to 1)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
