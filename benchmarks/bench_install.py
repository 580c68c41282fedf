"""The scoring install beside the full one: disk, package count, `dfdetect` start-up and one predict.

    .venv/bin/python benchmarks/bench_install.py [--repeats R] [--keep DIR] [--out FILE.json]

- Builds two venvs in a temporary folder (or DIR, kept) from this checkout, each with
  `pip install -c constraints.txt`: `scoring` is the base install (`pip install dfdetect`),
  `full` adds the `full` extra (TensorFlow, Keras, Jupyter, ...). Not editable, so each
  site-packages holds dfhelpers as a user's would, MTCNN's weights included.
- Size: `du -sk` of each site-packages, in MB (10^6 bytes; what the install puts on disk, pip
  and setuptools included), and the number of distributions in it.
- Start-up: `dfdetect --help`, and `dfdetect predict` of one tiny generated face video (320x240,
  20 frames) with an ONNX model, from the command's start to its exit: after a warm-up round,
  R rounds in which the two installs take turns, the median per install. Both score the same
  files with the same onnxruntime graph, so they differ only by what each install makes Python
  find and load.
- Check: `dfdetect evaluate` on a folder of two labelled videos must write its reports in
  both venvs (figures and metrics: matplotlib and scikit-learn are in the base install).
- The inputs (videos, a tiny Keras model and its ONNX export) are made in this interpreter with
  tests/videos.py, so run it with the dev venv's Python.

One line per install, one for the ratios, then one JSON object (also written by --out, with
the command and the machine line). Install times are printed, not compared: downloads dominate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

PROJECT = Path(__file__).resolve().parents[1]
INSTALLS = {"scoring": "", "full": "[full]"}  # venv name -> the extras it installs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    machine = _common.machine()
    _common.print_machine(machine)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="dfdetect-install-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        inputs = make_inputs(scratch / "inputs")
        results = {name: build_install(scratch, name, extras, inputs) for name, extras in INSTALLS.items()}
        _time_commands(scratch, results, inputs, args.repeats)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    scoring, full = results["scoring"], results["full"]
    ratios = {"site_packages_ratio": full["site_packages_mb"] / scoring["site_packages_mb"],
              "help_ratio": full["help_s"] / scoring["help_s"],
              "predict_ratio": full["predict_s"] / scoring["predict_s"]}
    for name, result in results.items():
        installed = "reused" if result["install_s"] is None else f"pip install {result['install_s']:.0f} s"
        print(f"{name}: {result['site_packages_mb']:.0f} MB site-packages, {result['n_distributions']} distributions "
              f"({installed}); dfdetect --help {result['help_s']:.2f} s, predict {result['predict_s']:.2f} s "
              f"(median of {args.repeats}, the two installs taking turns)", flush=True)
    print(f"full vs scoring: {ratios['site_packages_ratio']:.1f}x the disk, --help {ratios['help_ratio']:.2f}x, "
          f"predict {ratios['predict_ratio']:.2f}x", flush=True)
    _common.write_result({"benchmark": "bench_install", "machine": _common.finish_machine(machine),
                          "repeats": args.repeats, **results, **{k: round(v, 3) for k, v in ratios.items()}}, args.out)
    return 0


def make_inputs(folder: Path) -> dict[str, Path]:
    """Two labelled face videos (a DFDC metadata.json beside them) and a tiny model exported to ONNX."""
    from dfhelpers import model

    videos = _tests_videos()
    labelled = folder / "labelled"
    labelled.mkdir(parents=True, exist_ok=True)
    videos.face_video(labelled / "real.mp4", n_frames=20)
    videos.face_video(labelled / "fake.mp4", n_frames=24)
    (labelled / "metadata.json").write_text(json.dumps({"real.mp4": {"label": "REAL"},
                                                        "fake.mp4": {"label": "FAKE", "original": "real.mp4"}}))
    onnx_path = model.export_onnx(videos.save_tiny_model(folder / "tiny.keras"))
    return {"video": labelled / "real.mp4", "folder": labelled, "model": onnx_path}


def build_install(scratch: Path, name: str, extras: str, inputs: dict[str, Path]) -> dict[str, Any]:
    """One venv (reused when --keep kept a complete one), its size, and a check that evaluate runs in it."""
    venv = scratch / name
    done = venv / ".bench-installed"  # written once pip install succeeded
    install_s = None
    if not done.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c",
                        str(PROJECT / "constraints.txt"), f"{PROJECT}{extras}"], check=True)
        install_s = round(time.perf_counter() - started, 1)
        done.touch()
    [site_packages] = (venv / "lib").glob("python3.*/site-packages")
    out = scratch / f"evaluate-{name}"
    shutil.rmtree(out, ignore_errors=True)
    _run([str(venv / "bin" / "dfdetect"), "evaluate", str(inputs["folder"]), "--model", str(inputs["model"]),
          "--out", str(out), "--quiet"], name)
    if not (out / inputs["folder"].name / "metrics.json").is_file():
        sys.exit(f"{name}: dfdetect evaluate wrote no metrics.json")
    return {"extras": extras or "none", "install_s": install_s,
            "site_packages_mb": round(_disk_kib(site_packages) * 1024 / 1e6, 1),
            "n_distributions": len(list(site_packages.glob("*.dist-info"))),
            "has_tensorflow": _finds(venv, "tensorflow"), "has_torch": _finds(venv, "torch")}


def _time_commands(scratch: Path, results: dict[str, dict[str, Any]], inputs: dict[str, Path], repeats: int) -> None:
    """help_s and predict_s of each install: one warm-up each, then `repeats` rounds in which the
    installs take turns (a machine whose load drifts slows both alike), the median per install."""
    commands = {name: {"help_s": [str(scratch / name / "bin" / "dfdetect"), "--help"],
                       "predict_s": [str(scratch / name / "bin" / "dfdetect"), "predict", str(inputs["video"]),
                                     "--model", str(inputs["model"]), "--json", "--quiet"]} for name in results}
    times: dict[tuple[str, str], list[float]] = {}
    for round_index in range(max(1, repeats) + 1):
        for name, by_figure in commands.items():
            for figure, command in by_figure.items():
                started = time.perf_counter()
                _run(command, name)
                if round_index:  # round 0 warms the page cache
                    times.setdefault((name, figure), []).append(time.perf_counter() - started)
    for (name, figure), seconds in times.items():
        results[name][figure] = round(statistics.median(seconds), 3)


def _run(command: list[str], name: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"{name}: {' '.join(command[:2])} failed with exit code {result.returncode}:\n{result.stderr[-2000:]}")
    return result.stdout


def _disk_kib(folder: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(folder)], capture_output=True, text=True, check=True).stdout.split()[0])


def _finds(venv: Path, module: str) -> bool:
    probe = f"import importlib.util; print(importlib.util.find_spec({module!r}) is not None)"
    return _run([str(venv / "bin" / "python"), "-c", probe], venv.name).strip() == "True"


def _tests_videos() -> Any:
    """tests/videos.py, loaded by path: the tests' tiny face videos and tiny Keras model."""
    spec = importlib.util.spec_from_file_location("tests_videos", PROJECT / "tests" / "videos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per start-up figure (median)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="build the venvs in DIR and keep them for the next run, which reuses them "
                             "(default: a temporary folder, removed)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the summary here (benchmarks/results/install_size.json)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
