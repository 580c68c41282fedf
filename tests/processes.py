"""Waiting for processes that a test killed, or expects to end, to be gone (polled; never a timing assertion)."""

from __future__ import annotations

import time

import psutil


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def wait_until_gone(pids: list[int], seconds: float = 30.0) -> list[int]:
    """The pids still alive after up to `seconds` (polled; not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)
