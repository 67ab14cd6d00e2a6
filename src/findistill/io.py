"""Small file helpers: atomic writes (temp file + rename) so an interrupted run leaves nothing half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def json_sha256(obj: Any, **dumps_options: Any) -> str:
    """sha256 (hex) of ``obj`` as canonical JSON: sorted keys, compact separators, UTF-8, ``str()`` for other types.

    The one hash of the package: teacher fingerprints and cache keys, stage keys and paraphrase keys all use it.
    ``dumps_options`` override ``json.dumps``'s options for keys first written in another format (the paraphrase
    cache), so that caches written by older versions stay valid."""
    options = {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":"), "default": str, **dumps_options}
    return hashlib.sha256(json.dumps(obj, **options).encode("utf-8")).hexdigest()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target`` in one rename.

    On an exception the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


LOCK_FILE = ".findistill.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, shared: bool = False) -> Iterator[None]:
    """Hold ``folder`` for this process (``flock`` on ``<folder>/.findistill.lock``; the folder is made).

    Exclusive by default: another holder stops this one at once with :class:`~findistill.errors.FolderInUseError`
    naming the process that holds it. ``shared``: held together with other shared holders (label shards that write
    only their own chunks), but not with an exclusive one. The kernel drops the lock when its process ends, even by
    ``kill -9``, so a lock left by a dead process never blocks the next command. The file holds one JSON line per
    holder (pid, command, since), for the message.
    """
    import fcntl
    import sys
    import time

    from findistill.errors import FolderInUseError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    me = json.dumps({"pid": os.getpid(), "command": " ".join(["findistill", *sys.argv[1:]]),
                     "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(f"{folder} is in use by {_holders(path)}; wait for it to end, or use another "
                                   "--out") from None
        _write_holders(fd, ([line for line in _lines(path) if _alive(line)] if shared else []) + [me])
        yield
    finally:
        if shared:  # leave the other shard holders' lines
            with contextlib.suppress(OSError):
                _write_holders(fd, [line for line in _lines(path) if line != me])
        os.close(fd)  # releases the lock


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return []


def _write_holders(fd: int, lines: list[str]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, "".join(f"{line}\n" for line in lines).encode("utf-8"), 0)


def _alive(line: str) -> bool:
    """Whether the holder a lock-file line names is a live process on this machine."""
    try:
        os.kill(int(json.loads(line)["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True  # someone else's process, or not ours to judge
    return True


def _holders(path: Path) -> str:
    """Who holds a folder lock, from the lines its holders wrote into the lock file."""
    named = []
    for line in filter(_alive, _lines(path)):
        try:
            holder = json.loads(line)
            named.append(f"process {holder['pid']} ({holder['command']}, since {holder['since']})")
        except (ValueError, KeyError, TypeError):
            continue
    return ", ".join(named) or "another process"
