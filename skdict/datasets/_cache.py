"""On-disk cache for computed datasets (arrays in ``.npz`` files).

Loaders that run something expensive (a transformer over thousands of phrases)
store their arrays here under a key that hashes everything the arrays depend
on, so that a later call, in any Python session, reads them back instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._files import write_atomically

__all__ = [
    "cache_home",
    "cache_key",
    "folder_fingerprint",
    "load_arrays",
    "save_arrays",
]

CACHE_ENV = "SKDICT_CACHE"


def cache_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder skdict caches datasets in.

    Parameters
    ----------
    cache_dir : str or path-like, default=None
        The folder to use. None reads the ``SKDICT_CACHE`` environment
        variable (unless empty), then falls back to ``$XDG_CACHE_HOME/skdict``
        (when that is an absolute path), then to ``~/.cache/skdict``.

    Returns
    -------
    pathlib.Path
        The folder (not created here).

    Examples
    --------
    >>> from skdict.datasets._cache import cache_home
    >>> cache_home("/tmp/my-cache").as_posix()
    '/tmp/my-cache'
    """
    if cache_dir is None:
        # An empty variable means unset, not the current directory.
        cache_dir = os.environ.get(CACHE_ENV) or None
    if cache_dir is None:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG specification says to ignore a relative path.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        cache_dir = base / "skdict"
    return Path(cache_dir).expanduser()


def cache_key(parts: Mapping) -> str:
    """Return a stable hex key for JSON-serialisable ``parts``.

    Examples
    --------
    >>> from skdict.datasets._cache import cache_key
    >>> cache_key({"a": 1, "b": [2, 3]}) == cache_key({"b": [2, 3], "a": 1})
    True
    """
    # sort_keys makes the key independent of the order parts were written in.
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def folder_fingerprint(folder: Path) -> list[list]:
    """Name, size and modification time of every file directly in ``folder``.

    Hashing the weights themselves would cost about a second per gigabyte on
    each call; size and modification time change whenever a file is replaced,
    which is what invalidating a cache needs, and cost one ``stat`` per file.
    """
    files = sorted(entry for entry in folder.iterdir() if entry.is_file())
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


# What reading a missing, cut or damaged .npz raises: besides the OSError,
# ValueError and BadZipFile of a cut file, one changed byte makes zipfile raise
# NotImplementedError (an unknown compression method, the "patched data" flag)
# and NumPy's header parser tokenize.TokenError or SyntaxError. Not Exception:
# a bug or a MemoryError must not pass for a miss and overwrite a good file.
_DAMAGED_FILE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    SyntaxError,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
    tokenize.TokenError,
)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Return the arrays stored at ``path``, or None when there is no readable file."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except _DAMAGED_FILE_ERRORS:
        # A missing, truncated or corrupt file is a cache miss, never an
        # error: the caller recomputes and overwrites it.
        return None


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Store ``arrays`` at ``path`` atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: np.savez(handle, **arrays), binary=True)
