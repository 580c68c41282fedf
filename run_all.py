#!/usr/bin/env python
"""Run the notebooks 01..05 headlessly, in order, with papermill, on one configuration.

    python run_all.py                                   # configs/sample.yaml, every notebook
    python run_all.py --config configs/dfdc.yaml --from 2
    python run_all.py --only 4 -p train.epochs 3 -p train.backbone mobilenet_v2

Each notebook receives the papermill parameters `config_path` and `overrides` (the `-p`
pairs, values read as YAML). Executed copies go to `<work_dir>/executed/`. Every stage
skips work it finds complete, so re-running after an interruption resumes; `--from N`
starts at notebook N. The first failing notebook stops the run with its name, the failing
cell and the path of the executed copy; the exit code is then 1 (2 for a bad command line
or configuration).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent
NOTEBOOKS = PROJECT / "notebooks"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from dfhelpers import compat, config
    from dfhelpers.errors import DfdetectError

    overrides = dict(args.param)
    try:
        cfg = config.load(args.config, overrides)
    except DfdetectError as err:
        print(f"run_all: {err}", file=sys.stderr)
        return 2
    notebooks_dir = Path(args.notebooks).resolve()
    notebooks = select_notebooks(sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")), args.start, args.only)
    if not notebooks:
        print(f"run_all: no notebook matches --from/--only in {notebooks_dir}", file=sys.stderr)
        return 2
    # Kernels inherit these. An executed copy is read afterwards, not watched: a progress bar
    # updates at most every 30 s, so a text bar (no ipywidgets) adds one line per 30 s and a
    # widget bar stays one line whose final state is saved. TensorFlow's start-up lines and
    # OpenCV's FFmpeg errors (a broken video has its status) are quieted the same way.
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    compat.quiet_native_logs()
    out_dir = Path(args.out).resolve() if args.out else cfg.executed_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run_all: {len(notebooks)} notebook(s) on {cfg.source}; executed copies in {out_dir}")
    started = time.monotonic()
    for position, notebook in enumerate(notebooks, start=1):
        if not run_notebook(notebook, out_dir / notebook.name, cfg.source, overrides,
                            f"[{position}/{len(notebooks)}]", args.kernel):
            return 1
    print(f"run_all: done in {_clock(time.monotonic() - started)}; executed notebooks in {out_dir}")
    return 0


def select_notebooks(notebooks: list[Path], start: int | None, only: int | None) -> list[Path]:
    """The notebooks to run: all, those numbered >= start, or just number `only`."""
    numbered = [(int(p.name[:2]), p) for p in notebooks if p.name[:2].isdigit()]
    if only is not None:
        return [p for n, p in numbered if n == only]
    return [p for n, p in numbered if start is None or n >= start]


def run_notebook(notebook: Path, executed: Path, config_path: Path, overrides: dict,
                 tag: str, kernel: str) -> bool:
    """Execute one notebook with papermill; print one progress line; False on failure."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    print(f"{tag} {notebook.stem} ...", flush=True)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dfdetect-kernel-") as sockets:
            papermill.execute_notebook(
                str(notebook), str(executed),
                parameters={"config_path": str(config_path), "overrides": overrides},
                cwd=str(notebook.parent), kernel_name=kernel, progress_bar=False,
                **_kernel_transport(Path(sockets)),
            )
    except PapermillExecutionError as err:
        reason = f"{err.ename}: {err.evalue}".strip().splitlines()[0]
        print(f"{tag} {notebook.stem} FAILED after {_clock(time.monotonic() - started)} "
              f"in cell {err.exec_count} ({_cell_first_line(executed, err.exec_count)}): {reason}"
              f"\n    executed copy: {executed}", file=sys.stderr)
        return False
    print(f"{tag} {notebook.stem} ok in {_clock(time.monotonic() - started)} -> {executed}", flush=True)
    return True


def _kernel_transport(sockets: Path) -> dict:
    """On POSIX, a kernel that talks over local sockets in `sockets` (short path, removed after the
    notebook) rather than TCP: nothing listens on the network and the kernel prints no "running
    over TCP without encryption" warning. Elsewhere papermill's default (TCP)."""
    if os.name != "posix":
        return {}
    from traitlets.config import Config

    return {"config": Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(PROJECT / "configs" / "sample.yaml"),
                        help="run configuration (YAML); default configs/sample.yaml")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        type=str, help="override one config key, e.g. -p train.epochs 3 (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--from", dest="start", type=int, help="start at notebook N (e.g. 2)")
    group.add_argument("--only", type=int, help="run only notebook N")
    parser.add_argument("--out", help="folder for executed notebooks (default <work_dir>/executed)")
    parser.add_argument("--notebooks", default=str(NOTEBOOKS), help="folder of NN_*.ipynb (default notebooks/)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = parser.parse_args(argv)
    try:
        args.param = [(key, yaml.safe_load(value)) for key, value in args.param]
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())[:120]
        parser.error(f"-p: a value is not YAML ({problem}); quote it, e.g. -p train.model_name 'my: model'")
    return args


def _cell_first_line(executed: Path, exec_count: int) -> str:
    """The first line of the executed cell numbered exec_count, to point at it."""
    import nbformat

    notebook = nbformat.read(str(executed), as_version=4)
    for cell in notebook.cells:
        if cell.get("execution_count") == exec_count:
            line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            return line if len(line) <= 60 else line[:57] + "..."
    return "?"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


if __name__ == "__main__":
    sys.exit(main())
