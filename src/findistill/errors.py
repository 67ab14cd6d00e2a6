"""Errors a user can cause. Each message is one line; the CLI prints it and exits with status 2."""


class FindistillError(Exception):
    """Base class of user-facing errors."""


class DataError(FindistillError, ValueError):
    """Unreadable or malformed data: missing file, missing column, unknown label value, empty split."""


class ModelError(FindistillError):
    """A model reference that cannot be resolved or loaded (missing package, bad checksum, no such folder)."""


class TeacherHealthError(FindistillError):
    """The teacher failed its dev-split check (the health gate): distilling it would teach its failure."""


class FolderInUseError(FindistillError):
    """A run folder held by another findistill process."""


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of ``err``'s message, for one-line error messages; the exception's class name when the message
    is empty. ``with_type`` puts the class name in front: ``"OSError: no such file"``."""
    lines = str(err).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if with_type:
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text or type(err).__name__
