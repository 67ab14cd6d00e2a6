"""Teacher logits cached on disk: a :class:`CachedTeacher` is a :class:`~findistill.teacher.Teacher` too.

Online and cached sources return the same signal: the first call runs the teacher and stores its ``[N, 3]``
logits, any later call with the same teacher fingerprint and the same ordered texts reads them back without a
single forward pass. Per entry, in ``cache_dir``::

    <key>.safetensors   tensor "logits" [N, 3] float32 (metadata: key, n, texts_sha256)
    <key>.json          fingerprint, n, created, teacher name, texts_sha256 (for people; not needed to load)

``key = <sha256(fingerprint JSON)[:24]>-<sha256(texts JSON)[:24]>``. Writes are atomic (temp file + ``os.replace``);
an unreadable or mismatching entry is recomputed and overwritten.

Fresh logits with a NaN or an infinity stop the labelling with a one-line :class:`~findistill.errors.ModelError`
naming the first few texts (nothing is cached): a non-finite row would otherwise train as a silent CE-only row.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from findistill.config import LABELS
from findistill.errors import ModelError
from findistill.io_utils import atomic_write_json
from findistill.teacher import Teacher

log = logging.getLogger(__name__)


def _sha256_json(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of the exact ordered list of texts."""
    return _sha256_json([str(t) for t in texts])


def cache_key(fingerprint: dict, texts: Sequence[str]) -> str:
    """The cache entry name for a teacher fingerprint and an ordered list of texts."""
    return f"{_sha256_json(fingerprint)[:24]}-{texts_hash(texts)[:24]}"


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


def check_finite(logits: np.ndarray, texts: Sequence[str], teacher: str) -> None:
    """ModelError (one line) naming the first few texts whose teacher logits hold a NaN or an infinity."""
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size == 0:
        return

    def snippet(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"

    shown = "; ".join(f"#{i} {snippet(texts[i])!r}" for i in bad[:NONFINITE_SHOWN])
    more = f" and {bad.size - NONFINITE_SHOWN} more" if bad.size > NONFINITE_SHOWN else ""
    raise ModelError(f"teacher {teacher} returned non-finite logits (NaN or inf) for {bad.size} of {len(texts)} "
                     f"texts: {shown}{more}; nothing was cached (check the teacher's dtype, weights and max_length)")


def save_cached(cache_dir: Path, key: str, logits: np.ndarray, metadata: dict) -> Path:
    """Write ``<key>.safetensors`` then ``<key>.json``, each atomically."""
    from safetensors.numpy import save

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logits = np.ascontiguousarray(logits, dtype=np.float32)  # [N, 3]
    st_meta = {"key": key, "n": str(logits.shape[0]), "texts_sha256": str(metadata.get("texts_sha256", ""))}
    payload = save({"logits": logits}, metadata=st_meta)
    path = cache_dir / f"{key}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    atomic_write_json(cache_dir / f"{key}.json", metadata)
    return path


class CachedTeacher(Teacher):
    """Wraps a teacher; ``class_logits`` reads ``cache_dir`` first and runs the teacher only on a miss.

    ``hits`` / ``misses`` count calls served from disk / computed.
    """

    def __init__(self, teacher: Teacher, cache_dir: Path):
        self.teacher = teacher
        self.cache_dir = Path(cache_dir)
        self.name = teacher.name
        self.num_parameters = teacher.num_parameters
        self.hits = 0
        self.misses = 0
        self._fingerprint: dict | None = None

    def fingerprint(self) -> dict:
        if self._fingerprint is None:  # computed once: it may hash model files
            self._fingerprint = self.teacher.fingerprint()
        return self._fingerprint

    def release(self) -> None:
        """Free the inner teacher's weights; cached entries stay readable (a miss then raises ModelError)."""
        self.fingerprint()  # keep the identity computable without the model
        self.teacher.release()

    def key(self, texts: Sequence[str]) -> str:
        return cache_key(self.fingerprint(), texts)

    def class_logits(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        key = self.key(texts)
        digest = texts_hash(texts)
        cached = load_cached(self.cache_dir, key, n=len(texts), texts_sha256=digest)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        logits = np.asarray(self.teacher.class_logits(texts, progress=progress), dtype=np.float32)  # [N, 3]
        if logits.shape != (len(texts), len(LABELS)):
            raise ValueError(f"teacher {self.name} returned shape {logits.shape}, expected ({len(texts)}, 3)")
        check_finite(logits, texts, self.name)
        metadata = {
            "key": key,
            "teacher": self.name,
            "n": len(texts),
            "texts_sha256": digest,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": self.fingerprint(),
        }
        save_cached(self.cache_dir, key, logits, metadata)
        return logits
