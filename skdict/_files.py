"""Files that readers never see half-written, and runs that share them.

Results and caches are written to a temporary file beside their target and
renamed over it (an atomic replace on POSIX and Windows), so a crash or an
interrupt leaves either the old file or the new one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ._warnings import warn

__all__ = ["exclusive_access", "write_atomically"]

# Windows opens files in text mode unless told otherwise.
_O_BINARY = getattr(os, "O_BINARY", 0)


def write_atomically(
    path: Path, write: Callable[[IO[Any]], None], *, binary: bool = False
) -> None:
    """Write ``path`` through ``write(handle)``, replacing it in one step.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from skdict._files import write_atomically
    >>> path = Path(tempfile.mkdtemp()) / "records.json"
    >>> write_atomically(path, lambda handle: json.dump([1, 2], handle))
    >>> json.loads(path.read_text())
    [1, 2]
    """
    # Not tempfile.mkstemp: its files are private (mode 0600), where results
    # and caches shared by a group should get the permissions the user's
    # umask gives any new file (reading the umask means setting it, which an
    # interrupt could leave at 0). O_EXCL keeps the unique name exclusive, as
    # mkstemp does.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (_O_BINARY if binary else 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except OSError as exc:  # a missing or read-only folder
        raise _naming(exc, tmp, path) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, tmp, path) from None
        raise


def _naming(exc: OSError, tmp: Path, path: Path) -> OSError:
    """Return ``exc`` naming ``path`` where it names the temporary file.

    os.open and os.replace name the temporary file, which the caller never
    saw ("No such file or directory: 'figs/a.png.1234.5f0c.tmp'").
    """
    if exc.filename != str(tmp) or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


@contextmanager
def exclusive_access(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` among processes that ask for one.

    The lock is ``flock`` on the folder itself, so that it leaves no file
    behind. It holds between the processes of one machine (on a network
    file system, not between machines). Where there is no ``flock``
    (Windows), or the file system refuses it (some Lustre and FUSE mounts),
    the block runs unlocked, with a warning for the latter.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdict._files import exclusive_access
    >>> folder = Path(tempfile.mkdtemp())
    >>> with exclusive_access(folder):
    ...     (folder / "records.json").write_text("[]")
    2
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            warn(
                f"Could not lock {folder} ({exc.strerror}); runs writing there "
                "at the same time may overwrite each other's records.",
                RuntimeWarning,
            )
        yield
    finally:
        os.close(fd)  # releases the lock
