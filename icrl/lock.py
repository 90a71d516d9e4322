"""One lock per folder: a process that writes a run or dataset folder holds it for the whole job
(docs/reliability.md#one-writer-per-folder).

The lock is ``fcntl.flock`` on ``FOLDER/.icrl.lock``, which also records the holder's pid and
command; the holder removes the file when it is done. The kernel drops a flock when its holder
exits in any way, a SIGKILL included, so a lock is never stale: a file left behind by a killed job
is simply taken by the next one. Within one
process the lock is re-entrant (``icrl run`` holds its run folder while its stages take it again).
Another process holding it is a :class:`FolderBusy` error naming that process.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from icrl.typed import ConfigError

LOCK_NAME = ".icrl.lock"
_HELD: set[str] = set()  # real paths of the folders whose lock this process holds


class FolderBusy(ConfigError):
    """Another process holds the folder's lock; the message names it."""


def _holder(path: Path) -> str:
    """Who holds the lock, from its file (which the holder writes just after taking the lock)."""
    import time

    for _ in range(50):
        try:
            info = json.loads(path.read_text()[:1000])
            return f"pid {int(info['pid'])}, icrl {str(info['command'])[:40]}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "another process"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock (creating the folder) for the body; yields the folder.

    Raises:
        FolderBusy: another process holds it.
        OSError: the folder cannot be created or the lock file written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD or os.environ.get("RANK", "0") not in ("", "0"):  # held here; or a torchrun rank
        yield folder  # > 0, whose folder rank 0 holds for all ranks
        return
    path = folder / LOCK_NAME
    fd = _acquire(path, folder)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command,
                                 "argv": [a[:80] for a in sys.argv[:8]]}).encode())
        _HELD.add(key)
        yield folder
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            path.unlink()  # while still held: a waiting process then finds no file, or a new one
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(path: Path, folder: Path) -> int:
    """An exclusive flock on ``path``, which must still be the file at ``path`` once locked (a
    holder unlinks it on release, so a lock taken on an unlinked file is retried)."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{folder} is in use by {_holder(path)}; wait for it to finish or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
