"""Private state files: keys, certificates and the directory that holds them.

Rules (issue #11, item 13):

* the state directory is mode 0700, enforced on every start even when it
  already existed with a looser mode (a directory we do not own is a
  ConfigError: we cannot make it private);
* key and certificate files are mode 0600, tightened on every load;
* a state file that is a symbolic link is refused (``O_NOFOLLOW``) with a
  ConfigError naming it, so nobody with write access to a parent directory can
  point the gateway at a file of their choosing, or make it overwrite one;
* only regular files are accepted.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str) -> str:
    """Create ``path`` (and parents) if needed and make it 0700. Returns ``path``."""
    try:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"cannot create state directory {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        # A symlinked state directory is an operator's choice (e.g. onto another disk);
        # what matters is the mode of the directory it points to.
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"state directory {path} is not a directory")
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        try:
            os.chmod(path, DIR_MODE)
        except OSError as exc:
            raise ConfigError(f"state directory {path} has mode {stat.S_IMODE(st.st_mode):o} and cannot be "
                              f"made private (0700): {exc.strerror}") from None
    return path


def _open(path: str, flags: int, mode: int = FILE_MODE) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise ConfigError(f"state file {path} is a symbolic link; refusing to follow it "
                              f"(replace it with the real file)") from None
        raise


def _check_regular(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"state file {path} is not a regular file")
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)


def read_private(path: str) -> bytes | None:
    """The contents of a private state file (tightened to 0600), or None if it does not exist."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        _check_regular(fd, path)
        return f.read()


def write_private(path: str, data: bytes, *, exclusive: bool = False) -> None:
    """Write a private state file (0600), never through a symlink. ``exclusive``:
    fail with FileExistsError if it exists (two processes creating the same key)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = _open(path, flags)
    with os.fdopen(fd, "wb") as f:
        _check_regular(fd, path)
        f.write(data)


def tighten(path: str) -> bool:
    """Make an existing state file 0600 (refusing symlinks). False if it does not exist."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        _check_regular(fd, path)
    finally:
        os.close(fd)
    return True
