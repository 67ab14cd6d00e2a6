"""Errors a user can cause. Each message is one line; the CLI prints it and exits with status 2."""


class FindistillError(Exception):
    """Base class of user-facing errors."""


class DataError(FindistillError, ValueError):
    """Unreadable or malformed data: missing file, missing column, unknown label value, empty split."""


class ModelError(FindistillError):
    """A model reference that cannot be resolved or loaded (missing package, bad checksum, no such folder)."""
