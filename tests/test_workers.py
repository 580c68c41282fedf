"""Pool workers end when the process that started them is killed (kernel, runner, OOM killer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processes import alive, wait_until_gone

PROJECT = Path(__file__).resolve().parents[1]

# A parent that starts two busy workers, prints their pids (the progress marker) and waits.
PARENT = """
import sys, time
from dfhelpers import workers

def busy(_):
    import os, time
    time.sleep(600)
    return os.getpid()

def pid(_):
    import os, time
    time.sleep(0.5)  # both workers get one task each
    return os.getpid()

if __name__ == "__main__":
    death_signal = sys.argv[1] == "signal"
    if death_signal:
        pool = workers.process_pool(2)
    else:  # only the portable watch thread
        import concurrent.futures, multiprocessing, os
        pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
            initializer=workers.exit_with_parent, initargs=(os.getpid(), False))
    pids = set(pool.map(pid, range(2)))
    for _ in range(2):
        pool.submit(busy, 0)
    print("workers", *sorted(pids), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("mechanism", ["signal", "watch_thread"])
def test_pool_workers_exit_when_their_parent_is_killed(tmp_path, mechanism):
    script = tmp_path / "parent.py"  # a file: spawned workers re-import the parent's __main__
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    worker_pids: list[int] = []
    parent = subprocess.Popen([sys.executable, str(script), mechanism], stdout=subprocess.PIPE, text=True,
                              env=env, start_new_session=True)
    try:
        marker = parent.stdout.readline().split()
        assert marker and marker[0] == "workers", "the parent did not start its workers"
        worker_pids = [int(p) for p in marker[1:]]
        assert len(worker_pids) == 2 and alive(worker_pids) == worker_pids
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait(timeout=30) == -signal.SIGKILL
        assert wait_until_gone(worker_pids) == []
    finally:  # leave nothing behind, whatever failed
        for pid in alive(worker_pids):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
