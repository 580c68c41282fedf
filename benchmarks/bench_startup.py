"""`dfdetect predict` from the shell: start-up, time to the first result, and peak memory on a folder.

    .venv/bin/python benchmarks/bench_startup.py VIDEO --model M.keras [--folder DIR] [--folder-videos 50]
        [--min-height 720] [--repeats R] [--out FILE.json]

- phases: in a fresh interpreter, the time (and RSS after it) to import the CLI, to import
  onnxruntime, OpenCV and PyAV, to import the engine, to load MTCNN, to load the
  model (an ONNX session when M has an up-to-date M.onnx or is one: engine.choose_model; else
  importing TensorFlow, loading and tracing the Keras model), and to score VIDEO as `dfdetect
  predict` scores a lone video (engine.score_paths: every decoder thread to it) (first time,
  then again warm: the per-video work; then, as the baseline, warm with faces.detect_every 1:
  every sampled frame detected in full); one after the other, median of R interpreters. The
  JSON says whether torch and TensorFlow ended up imported (neither, with MTCNN on
  onnxruntime and a model with its ONNX sidecar).
- OMP_NUM_THREADS is --detector-threads in the children, as the face detector sets its
  threads for itself (faces.detector_threads, torch's or onnxruntime's).
- shell: `dfdetect predict VIDEO --model M --json --quiet` R times: seconds from the command's
  start to its first result line and to its exit; start-up = time to the first result minus
  the warm per-video work; the process's peak RSS (wait4).
- --help and a usage error: seconds, and whether torch or TensorFlow were imported.
- folder: `dfdetect predict` on a folder of --folder-videos videos (symlinks to the videos of
  --folder, or to VIDEO, cycled when there are fewer): peak RSS, and RSS after each result line
  (growth per video between the first quarter and the end).

One line per figure, then one JSON object (also written by --out, with the command and the machine line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common

DFDETECT = Path(sys.executable).with_name("dfdetect")
PROJECT = Path(__file__).resolve().parents[1]

# runs in a fresh interpreter: the sequential cost of each phase, one JSON line
PHASES = r"""
import json, resource, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
marks, cpu, rss = {}, {}, {}
def mark(name):
    global started, cpu_started
    now, cpu_now = time.perf_counter(), time.process_time()
    marks[name], cpu[name] = round(now - started, 3), round(cpu_now - cpu_started, 3)
    started, cpu_started = now, cpu_now
    rss[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
import dfhelpers.cli
mark("import_cli")
import onnxruntime, cv2, av
mark("import_onnxruntime")
from dfhelpers import config, engine
mark("import_engine")
scorer = engine.VideoScorer(sys.argv[2], config.FacesConfig(), config.ScoreConfig())
scorer.load_detector()
mark("load_mtcnn")
scorer.load()
mark("load_model")
# as `dfdetect predict` scores one video: score_paths gives a lone video every decoder thread
def score(with_scorer):
    return next(engine.score_paths([sys.argv[1]], with_scorer, progress=False))
score(scorer)
mark("first_video")
score(scorer)
mark("video_warm")
# the baseline, in the same interpreter: every sampled frame detected in full (faces.detect_every 1)
every_frame = engine.VideoScorer(sys.argv[2], config.FacesConfig(detect_every=1), config.ScoreConfig())
every_frame.load_detector().load()
mark("load_again")
score(every_frame)
mark("video_warm_detect_every_1")
print(json.dumps({"marks": marks, "cpu_s": cpu, "peak_rss_mb": rss, "runtime": scorer.choice.runtime,
                  "mtcnn_runtime": scorer.faces_cfg.mtcnn_runtime, "torch_imported": "torch" in sys.modules,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def main() -> None:
    args = _parser().parse_args()
    machine = _common.machine()
    _common.print_machine(machine)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(args.detector_threads)}
    phase_runs = [_phases(args.video, args.model, env) for _ in range(args.repeats)]
    phases = _median_dicts([run["marks"] for run in phase_runs])
    phase_rss = _median_dicts([run["peak_rss_mb"] for run in phase_runs])
    phase_cpu = _median_dicts([run["cpu_s"] for run in phase_runs])
    runtime = {key: phase_runs[0][key] for key in ("runtime", "mtcnn_runtime", "torch_imported", "tensorflow_imported")}
    print("phases, one after the other (median of {}; model on {runtime}, MTCNN on {mtcnn_runtime}, torch imported "
          "{torch_imported}, TensorFlow imported {tensorflow_imported}): "
          "{}".format(args.repeats, ", ".join(f"{name} {seconds:.2f} s ({_spread(phase_runs, name)})"
                                             for name, seconds in phases.items()), **runtime), flush=True)
    # CPU seconds depend less than wall seconds on what else runs on a shared machine
    print("CPU seconds per phase (median): " + ", ".join(f"{name} {value:.2f} s" for name, value in phase_cpu.items()),
          flush=True)
    print("peak RSS after each phase: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in phase_rss.items()), flush=True)
    shell = [_shell_run([args.video], args.model, env) for _ in range(args.repeats)]
    first_s = statistics.median(run["first_result_s"] for run in shell)
    startup_s = first_s - phases["video_warm"]
    print(f"dfdetect predict one video from the shell: first result after {first_s:.2f} s "
          f"({_spread(shell, 'first_result_s')}), exit after {statistics.median(run['exit_s'] for run in shell):.2f} s "
          f"(median of {args.repeats}); start-up {startup_s:.2f} s = first result - per-video work "
          f"{phases['video_warm']:.2f} s; peak RSS {statistics.median(run['peak_rss_mb'] for run in shell):.0f} MB; "
          f"CPU {statistics.median(run['cpu_s'] for run in shell):.1f} s", flush=True)
    light = {"help": _light_run(["--help"], env), "usage_error": _light_run(["predict", str(args.video)], env)}
    print("without work: " + "; ".join(f"{name} {run['seconds']:.2f} s, torch imported {run['torch']}, TensorFlow "
                                       f"imported {run['tensorflow']}" for name, run in light.items()), flush=True)
    folder = _folder_run(args, env)
    print(f"dfdetect predict on a folder of {folder['videos']} videos: peak RSS {folder['peak_rss_mb']:.0f} MB, RSS after "
          f"video {folder['quarter']} {folder['rss_quarter_mb']:.0f} MB and after the last {folder['rss_end_mb']:.0f} MB "
          f"({folder['growth_mb_per_video']:+.1f} MB/video); {folder['seconds']:.1f} s in all", flush=True)
    summary = {"benchmark": "bench_startup", "repeats": args.repeats, **runtime,
               "detector_threads": args.detector_threads, "phases_s": phases,
               "phases_min_max_s": {name: _min_max(phase_runs, name) for name in phases},
               "phases_cpu_s": phase_cpu, "phase_peak_rss_mb": phase_rss,
               "first_result_s": round(first_s, 2), "first_result_min_max_s": _min_max(shell, "first_result_s"),
               "startup_s": round(startup_s, 2),
               "per_video_s": phases["video_warm"],
               "per_video_detect_every_1_s": phases["video_warm_detect_every_1"],
               "per_video_vs_detect_every_1": round(phases["video_warm"] / phases["video_warm_detect_every_1"], 2),
               "exit_s": round(statistics.median(run["exit_s"] for run in shell), 2),
               "one_video_cpu_s": statistics.median(run["cpu_s"] for run in shell),
               "one_video_peak_rss_mb": round(statistics.median(run["peak_rss_mb"] for run in shell)),
               "without_work": light, "folder": folder}
    _common.write_result({**summary, "machine": _common.finish_machine(machine)}, args.out)


def _phases(video: Path, model: Path, env: dict) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", PHASES, str(video), str(model)], capture_output=True, text=True,
                            env=env, timeout=900)
    if result.returncode != 0:
        sys.exit(f"the phase run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _min_max(runs: list[dict], name: str) -> list[float]:
    values = [run["marks"][name] if "marks" in run else run[name] for run in runs]
    return [round(min(values), 3), round(max(values), 3)]


def _spread(runs: list[dict], name: str) -> str:
    low, high = _min_max(runs, name)
    return f"{low:.2f}-{high:.2f}"


def _shell_run(inputs: list[Path], model: Path, env: dict, on_line=None) -> dict:
    """Run `dfdetect predict INPUTS --model M --json --quiet`; time its first line and exit, its peak RSS."""
    command = [str(DFDETECT), "predict", *map(str, inputs), "--model", str(model), "--json", "--quiet"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stderr = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    drain.start()
    first_result_s, n_lines = None, 0
    for line in process.stdout:
        n_lines += 1
        first_result_s = first_result_s or time.perf_counter() - started
        if on_line is not None:
            on_line(process.pid, n_lines)
    _, status, usage = os.wait4(process.pid, 0)
    exit_s = time.perf_counter() - started
    drain.join(timeout=5)
    if os.waitstatus_to_exitcode(status) not in (0, 1) or first_result_s is None:
        sys.exit(f"{' '.join(command)} failed:\n{''.join(stderr)[-2000:]}")
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"first_result_s": first_result_s, "exit_s": exit_s, "peak_rss_mb": usage.ru_maxrss / 1024, "lines": n_lines,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def _light_run(arguments: list[str], env: dict) -> dict:
    """Seconds of `dfdetect ARGS` that does no work, and whether it imported torch or TensorFlow."""
    code = ("import sys\nfrom dfhelpers import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print({'torch': 'torch' in sys.modules, 'tensorflow': 'tensorflow' in sys.modules}, file=sys.stderr)")
    started = time.perf_counter()
    subprocess.run([str(DFDETECT), *arguments], capture_output=True, env=env, timeout=300)
    seconds = time.perf_counter() - started
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=env, timeout=300)
    imported = eval(result.stderr.strip().splitlines()[-1])  # noqa: S307 - our own dict literal
    return {"seconds": round(seconds, 3), **imported}


def _folder_run(args: argparse.Namespace, env: dict) -> dict:
    """Peak RSS of `dfdetect predict` on a folder of symlinks, and its RSS after each result."""
    sources = (_common.find_videos(args.folder, min_height=args.min_height) if args.folder else [args.video.resolve()])
    rss_after: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as folder:
        for index in range(args.folder_videos):
            source = sources[index % len(sources)].resolve()
            os.symlink(source, Path(folder) / f"{index:03d}_{source.name}")
        run = _shell_run([Path(folder)], args.model, env, on_line=lambda pid, _: rss_after.append(_rss_mb(pid)))
    quarter = max(1, len(rss_after) // 4)
    growth = (rss_after[-1] - rss_after[quarter - 1]) / max(1, len(rss_after) - quarter)
    return {"videos": args.folder_videos, "distinct_videos": min(len(sources), args.folder_videos),
            "peak_rss_mb": round(run["peak_rss_mb"]), "quarter": quarter, "rss_quarter_mb": round(rss_after[quarter - 1]),
            "rss_end_mb": round(rss_after[-1]), "growth_mb_per_video": round(growth, 2),
            "seconds": round(run["exit_s"], 1), "cpu_s": run["cpu_s"],
            "rss_after_each_video_mb": [round(value) for value in rss_after]}


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _median_dicts(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(run[name] for run in runs), 3) for name in runs[0]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="the one video timed from the shell")
    parser.add_argument("--model", type=Path, required=True,
                        help="a .keras model per the model contract (with or without its M.onnx), or an M.onnx")
    parser.add_argument("--detector-threads", type=int, default=1,
                        help="face detector threads (OMP_NUM_THREADS) in the children, as faces.detector_threads "
                             "(default 1)")
    parser.add_argument("--folder", type=Path, default=None, help="videos for the memory run (default: VIDEO)")
    parser.add_argument("--folder-videos", type=int, default=50, help="videos in the memory run (symlinks, cycled)")
    parser.add_argument("--min-height", type=int, default=0, help="only --folder videos at least this high")
    parser.add_argument("--repeats", type=int, default=3, help="interpreters / shell runs per figure (median)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json")
    return parser


if __name__ == "__main__":
    main()
