"""Teacher logits cached on disk in chunks: a :class:`CachedTeacher` is a :class:`~findistill.teacher.Teacher` too.

Online and cached sources return the same signal: a list of texts is cut into chunks of ``chunk_size`` consecutive
texts; each chunk is looked up by the teacher fingerprint and the chunk's own texts, and only missing chunks go to
the teacher, one chunk at a time (memory stays bounded by the chunk, and a crash loses at most the chunk in
progress). Per chunk, in ``cache_dir``::

    <key>.safetensors   tensor "logits" [n, 3] float32 (metadata: key, n, texts_sha256)
    <key>.json          fingerprint, n, created, teacher name, texts_sha256 (for people; not needed to load)

``key = <sha256(fingerprint JSON)[:24]>-<sha256(chunk texts JSON)[:24]>``: the same texts give the same files on any
machine, so the chunks written by ``label --shard i/N`` (chunks i, i+N, i+2N, … of every list) copy into one folder
as exactly the cache one process writes. A cache written before chunking held one entry per whole list under the
same formula; such an entry is read first. Writes are atomic (temp file + ``os.replace``); an unreadable or
mismatching chunk is recomputed and overwritten.

``identity_key`` (the run's hash of the teacher's config, see :mod:`findistill.pipeline.runner`) names a file
``teacher-<identity_key>.json`` holding the fingerprint, name and parameter count of the teacher that config loads:
once it exists, cached chunks are read without loading the teacher at all.

Under ``accelerate launch`` each process labels its own chunks (:meth:`CachedTeacher.label_shard` with its process
index) and writes only those; the identity file is written by the main process.

Fresh logits with a NaN or an infinity stop the labelling with a one-line :class:`~findistill.errors.ModelError`
naming the first few texts (that chunk is not cached): a non-finite row would otherwise train as a silent CE-only row.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from findistill.config import LABELS
from findistill.distributed import is_main
from findistill.errors import ModelError
from findistill.io import json_sha256, atomic_write_bytes, atomic_write_json
from findistill.teachers.base import Teacher

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4096


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of the exact ordered list of texts."""
    return json_sha256([str(t) for t in texts])


def cache_key(fingerprint: dict, texts: Sequence[str]) -> str:
    """The cache entry name for a teacher fingerprint and an ordered list of texts (a chunk)."""
    return f"{json_sha256(fingerprint)[:24]}-{texts_hash(texts)[:24]}"


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each chunk of a list of ``n`` texts."""
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def load_cached(cache_dir: Path, key: str, n: int | None = None, texts_sha256: str | None = None) -> np.ndarray | None:
    """The cached ``[N, 3]`` float32 logits of ``key``, or None when missing, unreadable or not matching."""
    from safetensors.numpy import load

    path = Path(cache_dir) / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
        logits = load(raw)["logits"]
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except Exception as err:  # truncated / corrupted file: recompute
        log.warning("teacher cache entry %s is unreadable (%s); recomputing", path.name, type(err).__name__)
        return None
    ok = (
        logits.ndim == 2
        and logits.shape[1] == len(LABELS)
        and logits.dtype == np.float32
        and (n is None or logits.shape[0] == n)
        and (texts_sha256 is None or meta.get("texts_sha256") == texts_sha256)
        and bool(np.isfinite(logits).all())
    )
    if not ok:
        log.warning("teacher cache entry %s does not match its texts; recomputing", path.name)
        return None
    return logits


NONFINITE_SHOWN = 3  # texts named in the error
_SNIPPET_CHARS = 60


def check_finite(logits: np.ndarray, texts: Sequence[str], teacher: str, offset: int = 0) -> None:
    """ModelError (one line) naming the first few texts whose teacher logits hold a NaN or an infinity.

    ``texts`` is one chunk; ``offset`` its position in the whole list (texts are numbered in the whole list)."""
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size == 0:
        return

    def snippet(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"

    shown = "; ".join(f"#{offset + i} {snippet(texts[i])!r}" for i in bad[:NONFINITE_SHOWN])
    more = f" and {bad.size - NONFINITE_SHOWN} more" if bad.size > NONFINITE_SHOWN else ""
    raise ModelError(f"teacher {teacher} returned non-finite logits (NaN or inf) for {bad.size} of {len(texts)} "
                     f"texts: {shown}{more}; this chunk was not cached (check the teacher's dtype, weights and "
                     "max_length)")


def save_cached(cache_dir: Path, key: str, logits: np.ndarray, metadata: dict) -> Path:
    """Write ``<key>.safetensors`` then ``<key>.json``, each atomically."""
    from safetensors.numpy import save

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logits = np.ascontiguousarray(logits, dtype=np.float32)  # [N, 3]
    st_meta = {"key": key, "n": str(logits.shape[0]), "texts_sha256": str(metadata.get("texts_sha256", ""))}
    payload = save({"logits": logits}, metadata=st_meta)
    path = cache_dir / f"{key}.safetensors"
    atomic_write_bytes(path, payload)
    atomic_write_json(cache_dir / f"{key}.json", metadata)
    return path


def hub_commits(teacher: Any) -> list[str | None]:
    """The hub commit hash (``config._commit_hash``) of each loaded model of ``teacher`` (ensemble members in order);
    None for a local folder, a pinned ``revision`` or a model that is not loaded as a transformers module."""
    members = getattr(teacher, "members", None)
    if members:
        return [commit for member in members for commit in hub_commits(member)]
    model, cfg = getattr(teacher, "model", None), getattr(teacher, "cfg", None)
    if model is None or getattr(cfg, "revision", None):
        return [None]
    return [getattr(getattr(model, "config", None), "_commit_hash", None)]


class CachedTeacher(Teacher):
    """Wraps a teacher; ``class_logits`` reads ``cache_dir`` chunk by chunk and runs the teacher only on a miss.

    ``teacher`` is a teacher or a function that loads one (called on the first miss, or for the fingerprint when
    no identity file exists). ``hits`` / ``misses`` count chunks served from disk / computed;
    ``computed_texts`` / ``compute_seconds`` the texts the teacher labelled here and its time doing so (the load
    excluded).
    """

    def __init__(self, teacher: Teacher | Callable[[], Teacher], cache_dir: Path,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, identity_key: str | None = None):
        loaded = hasattr(teacher, "class_logits")
        self._teacher: Teacher | None = teacher if loaded else None  # type: ignore[assignment]
        self._load = None if loaded else teacher
        self.cache_dir = Path(cache_dir)
        self.chunk_size = int(chunk_size)
        self.identity_key = identity_key
        self.hits = 0
        self.misses = 0
        self.computed_texts = 0
        self.compute_seconds = 0.0
        self._identity: dict | None = None

    # ------------------------------------------------------------------ identity (no model needed once stored)
    @property
    def teacher(self) -> Teacher:
        """The inner teacher, loaded on first use."""
        if self._teacher is None:
            self._teacher = self._load()  # type: ignore[misc]
        return self._teacher

    def _identity_path(self) -> Path | None:
        return None if self.identity_key is None else self.cache_dir / f"teacher-{self.identity_key}.json"

    def identity(self) -> dict:
        """``{"fingerprint", "name", "num_parameters"}`` of the teacher: from the identity file, or from the model."""
        if self._identity is None:
            path = self._identity_path()
            if path is not None and path.is_file():
                with contextlib.suppress(ValueError, KeyError):
                    stored = json.loads(path.read_text(encoding="utf-8"))
                    self._identity = {k: stored[k] for k in ("fingerprint", "name", "num_parameters")}
            if self._identity is None:
                teacher = self.teacher
                fingerprint = dict(teacher.fingerprint())
                commits = hub_commits(teacher)
                if any(commits):  # an unpinned hub model: its commit is part of what it is
                    fingerprint["hub_commits"] = commits
                self._identity = {"fingerprint": fingerprint, "name": teacher.name,
                                  "num_parameters": int(teacher.num_parameters)}
                if path is not None and is_main():  # under several processes, each writes only its own chunks
                    atomic_write_json(path, {"identity_key": self.identity_key, **self._identity})
        return self._identity

    def fingerprint(self) -> dict:
        return self.identity()["fingerprint"]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.identity()["name"]

    @property
    def num_parameters(self) -> int:  # type: ignore[override]
        return self.identity()["num_parameters"]

    def release(self) -> None:
        """Free the inner teacher's weights; cached chunks stay readable (a miss then raises ModelError)."""
        if self._teacher is None:
            return
        self.identity()  # keep the identity computable without the model
        self._teacher.release()

    def key(self, texts: Sequence[str]) -> str:
        return cache_key(self.fingerprint(), texts)

    # ------------------------------------------------------------------ chunks
    def _read(self, texts: list[str]) -> np.ndarray | None:
        return load_cached(self.cache_dir, self.key(texts), n=len(texts), texts_sha256=texts_hash(texts))

    def _compute(self, texts: list[str], offset: int, progress: bool) -> np.ndarray:
        teacher = self.teacher  # loaded before the clock starts
        start = time.perf_counter()
        logits = np.asarray(teacher.class_logits(texts, progress=progress), dtype=np.float32)  # [n, 3]
        self.compute_seconds += time.perf_counter() - start
        if logits.shape != (len(texts), len(LABELS)):
            raise ValueError(f"teacher {self.name} returned shape {logits.shape}, expected ({len(texts)}, 3)")
        check_finite(logits, texts, self.name, offset)
        key = self.key(texts)
        save_cached(self.cache_dir, key, logits, {
            "key": key,
            "teacher": self.name,
            "n": len(texts),
            "texts_sha256": texts_hash(texts),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": self.fingerprint(),
        })
        self.misses += 1
        self.computed_texts += len(texts)
        return logits

    def _chunk(self, texts: list[str], bounds: tuple[int, int], index: int, total: int, progress: bool,
               keep: bool) -> np.ndarray | None:
        start, end = bounds
        chunk = texts[start:end]
        cached = self._read(chunk)
        if cached is not None:
            self.hits += 1
            return cached
        began = time.perf_counter()
        logits = self._compute(chunk, start, progress)
        if total > 1:
            log.info("teacher %s: chunk %d/%d labelled (%d texts, %.1f texts/s)", self.name, index + 1, total,
                     len(chunk), len(chunk) / max(time.perf_counter() - began, 1e-9))
        return logits if keep else None

    def _whole(self, texts: list[str], bounds: list[tuple[int, int]]) -> np.ndarray | None:
        """The whole-list entry of a cache written before chunking, when there is one."""
        whole = self._read(texts) if len(bounds) > 1 else None
        if whole is not None:
            self.hits += 1
        return whole

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        bounds = chunk_bounds(len(texts), self.chunk_size)
        whole = self._whole(texts, bounds)
        if whole is not None:
            return whole
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)  # [N, 3]
        for index, (start, end) in enumerate(bounds):
            out[start:end] = self._chunk(texts, (start, end), index, len(bounds), progress, keep=True)
        return out

    def label_shard(self, texts: Sequence[str], shard: int, num_shards: int, progress: bool = True) -> int:
        """Write the missing chunks ``shard``, ``shard + num_shards``, … of ``texts``; returns how many this shard
        holds (none to write when the list has a whole-list entry). Nothing is kept in memory between chunks."""
        texts = [str(t) for t in texts]
        bounds = chunk_bounds(len(texts), self.chunk_size)
        mine = list(range(shard, len(bounds), num_shards))
        if self._whole(texts, bounds) is not None:
            return len(mine)
        for index in mine:
            self._chunk(texts, bounds[index], index, len(bounds), progress, keep=False)
        return len(mine)
