"""Worker processes that never outlive their parent.

A pool worker whose parent is SIGKILLed would otherwise keep running: it holds CPUs and, in
``icrl collect``, keeps writing shards into a folder whose lock was released with the parent's
death. :func:`die_with_parent`, given as a pool's ``initializer``, ends the worker with its parent.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Make this process exit as soon as its parent ``parent_pid`` dies, by a SIGKILL included.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills this process when the parent
    exits. The kernel ties this to the parent *thread* that started the process, so start workers
    from a thread that outlives them (a ``ProcessPoolExecutor`` starts them from the thread that
    calls ``submit``). Elsewhere, or if ``prctl`` cannot be called, a daemon thread polls
    ``os.getppid()`` every ``poll_s`` seconds and calls ``os._exit`` once the process has been
    reparented.

    Use it as ``ProcessPoolExecutor(..., initializer=die_with_parent, initargs=(os.getpid(),))``.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no usable libc: watch instead
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, poll_s), daemon=True,
                     name="die-with-parent").start()


def _exit_when_orphaned(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)
