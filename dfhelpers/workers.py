"""Worker processes that end when the process that started them ends.

A notebook kernel that Jupyter restarts, the OOM killer takes or a user SIGKILLs cannot shut
its process pool down; without help its workers live on as orphans, each holding a loaded
model (1.2 GB for MTCNN). Workers made by `process_pool` exit within about a second of their
parent's death: on Linux the kernel sends them SIGKILL (prctl PR_SET_PDEATHSIG); everywhere a
daemon thread polls the parent and ends the worker when it is gone.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How often the portable watch looks at the parent: a second is far below any useful
# task length and costs nothing measurable.
WATCH_SECONDS = 1.0


def process_pool(max_workers: int, initializer: Optional[Callable[..., Any]] = None,
                 initargs: tuple = ()) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool whose workers exit when this process dies, then run `initializer(*initargs)`.

    "spawn" rather than fork: forking a process that already ran torch (a notebook kernel)
    can deadlock its thread pools. Create the pool from a thread that outlives it (on Linux
    the death signal follows the thread that started the worker), e.g. the main thread.
    """
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, max_workers), mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))


def exit_with_parent(parent_pid: int, death_signal: bool = True, poll_seconds: float = WATCH_SECONDS) -> None:
    """Make this process end when process `parent_pid` (its parent) ends.

    death_signal=False skips the Linux-only kernel signal and relies on the watch thread.
    """
    if death_signal and sys.platform.startswith("linux"):
        _set_parent_death_signal()
    if not _parent_alive(parent_pid):  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), daemon=True,
                     name="dfhelpers-exit-with-parent").start()


def _start_worker(parent_pid: int, initializer: Optional[Callable[..., Any]], initargs: tuple) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (unusual libc): the watch thread still works
        pass


def _parent_alive(parent_pid: int) -> bool:
    """The parent is alive while it is still our parent (an orphan is re-parented)."""
    if os.name == "posix":
        return os.getppid() == parent_pid
    import psutil

    return psutil.pid_exists(parent_pid)


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    while _parent_alive(parent_pid):
        time.sleep(poll_seconds)
    os._exit(1)  # no clean-up: the parent that would have used our results is gone
