"""The `dfdetect` command: score videos with a trained model outside the notebooks."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from dfhelpers import compat
from dfhelpers.runfolder import VIDEO_SUFFIXES  # names only: no pandas, torch or TensorFlow for --help

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
# what the `full` extra adds that a command may need (pyproject.toml); the base install scores ONNX models
_FULL_EXTRA_MODULES = ("keras", "tensorflow", "tf2onnx")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `dfdetect` console script; returns the exit code.

    0: every input scored; 1: some input could not be read (its row says why);
    2: usage, config or model error (one line on stderr, nothing scored).
    Run as the console script (argv None), the process ends as soon as its output is flushed.
    """
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().error("choose a command: predict, evaluate or export")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no display needed
    compat.quiet_native_logs()  # TensorFlow start-up lines, FFmpeg errors: a broken video has its row
    if argv is None:
        _bound_native_memory()
    from dfhelpers.errors import DfdetectError

    try:
        if args.command == "export":
            code = export(Path(args.model), None if args.out is None else Path(args.out))
        elif args.command == "evaluate":
            code = evaluate(args.folders, Path(args.model), Path(args.out), config_path=args.config,
                            progress=not args.quiet, against=None if args.against is None else Path(args.against),
                            labels_csv=None if args.labels is None else Path(args.labels))
        else:
            code = predict(args.inputs, Path(args.model), config_path=args.config, as_json=args.json,
                           progress=not args.quiet, frames_to=args.frames, explain_dir=args.explain)
    except DfdetectError as err:
        print(f"dfdetect: error: {' '.join(str(err).split())}", file=sys.stderr)
        code = EXIT_USAGE
    except ModuleNotFoundError as err:
        if err.name not in _FULL_EXTRA_MODULES:
            raise
        print(f"dfdetect: error: {err.name} is not installed: the scoring install scores .onnx models; a .keras "
              "model without an up-to-date .onnx, --explain and export need pip install 'dfdetect[full]'",
              file=sys.stderr)
        code = EXIT_USAGE
    if argv is None:
        _exit_now(code)
    return code


def predict(inputs: list[str], model_path: Path, config_path: Optional[str] = None, as_json: bool = False,
            progress: bool = True, frames_to: Optional[str] = None, explain_dir: Optional[str] = None) -> int:
    """Score every video named or found in `inputs`, print one row (or JSON line) each, return the exit code.

    `frames_to` "-" prints one JSON line per face instead of the table, a path writes them there;
    `explain_dir` gets one PNG per judged video (crops of the deciding track, heatmaps, scores).

    Raises:
        ConfigError: the config file is malformed. ModelLoadError: the model is missing or corrupt.
    """
    from dfhelpers import engine, scoring
    from dfhelpers.errors import ModelLoadError

    faces_cfg, score_cfg = _settings(config_path)
    paths, bad_inputs = expand_inputs(inputs)
    scorer = engine.VideoScorer(model_path, faces_cfg, score_cfg)
    if paths:  # the face detector now; an ONNX model at once, a Keras one while the first videos are detected
        scorer.start_loading(guard=_native_stderr_captured)
        if explain_dir is not None and scorer.choice.keras_path is None:
            raise ModelLoadError(f"{model_path}: --explain needs the Keras model; pass the .keras file "
                                 "this .onnx was exported from")
    elif not model_path.is_file():
        raise ModelLoadError(f"{model_path}: model file not found; pass a .keras file saved by notebook 04")
    width = max([len(Path(p).name) for p in paths] + [len(i) for i, _ in bad_inputs] + [5])
    shown = frames_to != "-"
    # printed with the first result, so that a model that fails to load leaves stdout empty
    preamble = functools.partial(_print_preamble, bad_inputs, as_json, width, shown)
    n_failed, is_started = len(bad_inputs), False
    with _frames_output(frames_to) as frames_file:
        for scored in engine.score_paths(paths, scorer, progress=progress):
            if not is_started:  # the model loaded: a hint to export is worth giving now, not before an error
                _say_why_keras(scorer)
                preamble()
                is_started = True
            row = _result_row(scored, score_cfg)
            n_failed += scoring.is_failed(row["status"])
            _emit(row, as_json, width, shown=shown)
            _write_frames(scored, frames_file)
            if explain_dir is not None and row["track"] is not None and len(scored.crops):
                _explain(scored, row, scorer, Path(explain_dir))
    if not is_started:
        preamble()
    return EXIT_SOME_FAILED if n_failed else EXIT_OK


def _print_preamble(bad_inputs: list[tuple[str, str]], as_json: bool, width: int, shown: bool) -> None:
    """The table's header (unless JSON or per-face lines are printed) and a row per bad input."""
    if shown and not as_json:
        print(f"{'VIDEO':<{width}}  {'SCORE':>5}  {'VERDICT':<19}  {'FACES':>5}  STATUS", flush=True)
    for input_name, reason in bad_inputs:
        _emit({"video": input_name, "path": input_name, "status": reason, "score": None, "verdict": None,
               "n_faces": 0, "faces_used": 0}, as_json, width, shown=shown)


def evaluate(folders: list[str], model_path: Path, out: Path, config_path: Optional[str] = None,
             progress: bool = True, against: Optional[Path] = None, labels_csv: Optional[Path] = None) -> int:
    """Score and measure each labelled folder on its own (evaluation.evaluate_each); print its metrics table.

    Writes out/<folder>/predictions.csv, frame_scores.csv, metrics.json, submission.csv and
    figures/ (two folders of one name: out/<name>/ and out/<name>-2/); face scores are cached in
    out/score_cache/, so a re-run scores nothing again. With `against` (a baseline model) the
    baseline is measured on the same crops too (faces detected once; its reports in out/against/) and each folder's
    model-minus-baseline differences, with paired bootstrap intervals, are printed and written
    to out/<folder>/comparison.json.

    `labels_csv` (video,label[,method]) labels folders that have no labels file of their own; a
    video nothing labels is scored and reported unlabelled.

    Raises:
        MetadataError: a folder has no labels, or malformed ones. ModelLoadError: a model is missing.
    """
    from dfhelpers import engine, evaluation, files, runfolder
    from dfhelpers.errors import ModelLoadError
    from dfhelpers.metrics import compare, comparison_table

    faces_cfg, score_cfg = _settings(config_path)
    for path in [model_path] + ([against] if against is not None else []):
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found; pass a .keras file saved by notebook 04")
    # the baseline scores the crops this run extracts, into the cache its own measurement reads
    baseline = None if against is None else engine.VideoScorer(against, faces_cfg, score_cfg)
    also = [] if baseline is None else [
        (baseline, engine.ScoreCache.for_scorer(out / "against" / runfolder.SCORE_CACHE_DIR, baseline))]

    def load_quietly(scorer: engine.VideoScorer) -> None:
        for each in [scorer, *(other for other, _ in also)]:
            _load_quietly(each)

    results = []
    for name, result in evaluation.evaluate_each(folders, model_path, faces_cfg, score_cfg, out, labelled=True,
                                                 progress=progress, before_scoring=load_quietly, also=also,
                                                 labels_csv=labels_csv):
        figures = evaluation.evaluation_figures(result["predictions"], result["metrics"], score_cfg.threshold)
        evaluation.save_figures(figures, result["reports_dir"] / runfolder.FIGURES_DIR)
        print(_report(name, result["metrics"], result["reports_dir"]), flush=True)
        results.append((name, result))
    if against is None:
        return EXIT_OK
    baselines = evaluation.evaluate_each(folders, against, faces_cfg, score_cfg, out / "against", labelled=True,
                                         progress=progress, before_scoring=_load_quietly, labels_csv=labels_csv)
    for (name, result), (_, baseline) in zip(results, baselines):
        comparison = compare(baseline["predictions"], result["predictions"], score_cfg.threshold,
                             n_bootstrap=score_cfg.bootstrap, seed=score_cfg.bootstrap_seed,
                             confidence=score_cfg.confidence)
        written = files.write_json(dict(comparison, model=str(model_path), against=str(against)),
                                   result["reports_dir"] / "comparison.json")
        print(f"== {name}: {model_path.name} minus {against.name} on the same {comparison['n_videos']} videos "
              f"(paired: each of {comparison['bootstrap']['n']} bootstrap draws takes the same videos for both)\n"
              f"{comparison_table(comparison).to_string()}\n   comparison: {written}", flush=True)
    return EXIT_OK


def export(keras_path: Path, onnx_path: Optional[Path] = None) -> int:
    """Write the ONNX export of a .keras model (default: its sidecar X.onnx), print its path.

    `predict` and `evaluate` then score with onnxruntime: no TensorFlow in the process.

    Raises:
        ModelLoadError: the .keras file is missing or corrupt, or the export disagrees with Keras.
    """
    from dfhelpers.errors import ModelLoadError

    if not keras_path.is_file():
        raise ModelLoadError(f"{keras_path}: model file not found; pass a .keras file saved by notebook 04")
    with _native_stderr_captured():  # TensorFlow's start-up lines held back, replayed on failure
        from dfhelpers import model

        written = model.export_onnx(keras_path, onnx_path)
    print(written, flush=True)
    return EXIT_OK


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files to score (directories scanned for video files, not recursively) and bad inputs.

    A file named explicitly is scored whatever its extension. Returns (paths, [(input, reason)]).
    """
    paths: list[Path] = []
    bad: list[tuple[str, str]] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            paths.extend(found)
            if not found:
                bad.append((name, f"no_videos: no {'/'.join(VIDEO_SUFFIXES)} files in this folder"))
        elif path.is_file():
            paths.append(path)
        else:
            bad.append((name, "missing: no such file or folder"))
    return paths, bad


# --- private helpers -------------------------------------------------------------------


def _bound_native_memory() -> None:
    """Keep the process's memory flat over a folder (glibc only; elsewhere nothing changes).

    Decoded frames (a few MB each) are allocated and freed by several threads. glibc's default
    raises its mmap threshold after each such free, so later frames come from per-thread heaps
    that are never given back: RSS grew ~60 MB per video (peak 2.68 GB over 8 FF++ videos).
    A fixed 1 MB threshold (big blocks mapped and unmapped), heap trimming above 4 MB and two
    arenas kept it flat (peak 2.38 GB, 2.16 GB after the 8th video), at no measurable cost.
    """
    import ctypes

    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # from <malloc.h>
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl)
        return
    libc.mallopt(m_mmap_threshold, 1 << 20)
    libc.mallopt(m_trim_threshold, 4 << 20)
    libc.mallopt(m_arena_max, 2)


def _exit_now(code: int) -> None:
    """End the process once its output is flushed: tearing down torch and TensorFlow took 4 s
    after the last result; every file the command writes is complete (atomic) by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="dfdetect", description="Deepfake-video detection with a trained dfdetect model.")
    commands = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    predict_cmd = commands.add_parser(
        "predict", help="score videos: P(FAKE) per video",
        description="Score videos with a trained model: a table (or JSON lines) on stdout, progress on stderr. "
                    "Exit 0: all scored; 1: some input failed; 2: usage, config or model error.")
    predict_cmd.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR",
                             help=f"video files, or folders scanned for {' '.join(VIDEO_SUFFIXES)}")
    predict_cmd.add_argument("--model", required=True, metavar="M.keras",
                             help="a model saved by notebook 04 (scored with its up-to-date M.onnx when there is "
                                  "one, else with Keras), or an M.onnx from `dfdetect export`")
    predict_cmd.add_argument("--json", action="store_true", help="one JSON object per video instead of a table")
    predict_cmd.add_argument("--config", metavar="C.yaml",
                             help="take the faces: and score: settings from this run config (default: built-in)")
    predict_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    predict_cmd.add_argument("--frames", nargs="?", const="-", metavar="FILE.jsonl",
                             help="every face: frame index, box, track, score as JSON lines; "
                                  "on stdout instead of the table, or into FILE.jsonl")
    predict_cmd.add_argument("--explain", metavar="OUT_DIR",
                             help="write OUT_DIR/<video>.png: the deciding track's crops, heatmaps, frame scores")
    evaluate_cmd = commands.add_parser(
        "evaluate", help="measure a model on labelled folders: AUC, AP, EER, log loss, accuracy with intervals",
        description="Score labelled folders (each with a DFDC-shaped metadata.json) and print, per folder, "
                    "video- and frame-level metrics with bootstrap intervals and a breakdown by part and by "
                    "method/source when metadata.json names one. Exit 0: measured; 2: usage, config, "
                    "metadata or model error.")
    evaluate_cmd.add_argument("folders", nargs="+", metavar="DIR",
                              help="labelled folders: videos with metadata.json, or face images (metadata.csv, labels.csv)")
    evaluate_cmd.add_argument("--labels", metavar="LABELS.csv",
                              help="labels for folders without a labels file: a CSV with columns video,label[,method]")
    evaluate_cmd.add_argument("--model", required=True, metavar="M.keras",
                              help="a model saved by notebook 04, or its M.onnx from `dfdetect export`")
    evaluate_cmd.add_argument("--out", default="dfdetect-evaluation", metavar="OUT",
                              help="reports, figures and the score cache go here (default: ./dfdetect-evaluation)")
    evaluate_cmd.add_argument("--config", metavar="C.yaml", help="take the faces: and score: settings from this config")
    evaluate_cmd.add_argument("--against", metavar="B.keras",
                              help="also measure baseline B on the same videos and print M minus B per metric, "
                                   "with paired bootstrap intervals: does M really beat B on these folders?")
    evaluate_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    export_cmd = commands.add_parser(
        "export", help="write M.onnx beside M.keras: predict and evaluate then start without TensorFlow",
        description="Export a trained model to ONNX, verified against Keras on random crops. Models trained "
                    "by this version already have one. Exit 0: written; 2: missing or corrupt model.")
    export_cmd.add_argument("model", metavar="M.keras", help="a model saved by notebook 04")
    export_cmd.add_argument("--out", metavar="X.onnx", help="where to write it (default: M.onnx beside M.keras)")
    return parser


def _load_quietly(scorer: Any) -> None:
    """Load the face detector and the model with TensorFlow's start-up lines held back (the progress bar
    stays visible), then say why Keras scores when an export would start faster."""
    with _native_stderr_captured():
        scorer.load()
    _say_why_keras(scorer)


def _say_why_keras(scorer: Any) -> None:
    """One line on stderr when a .keras model is scored with Keras although an export would start faster."""
    if scorer.choice is not None and scorer.choice.note:
        print(f"dfdetect: {scorer.choice.note}", file=sys.stderr, flush=True)


def _settings(config_path: Optional[str]) -> tuple[Any, Any]:
    """(FacesConfig, ScoreConfig) from a run config, or the built-in defaults."""
    from dfhelpers import config

    if config_path is None:
        return config.FacesConfig(), config.ScoreConfig()
    cfg = config.load(config_path)
    return cfg.faces, cfg.score


def _result_row(scored: Any, score_cfg: Any) -> dict[str, Any]:
    import pandas as pd

    from dfhelpers import scoring

    video = pd.DataFrame({"video": [scored.video], "path": [scored.path]})
    prediction = scoring.predictions_from_faces(video, scored.faces.assign(video=scored.video),
                                                {scored.video: scored.status}, score_cfg).iloc[0]
    is_failed = scoring.is_failed(prediction["status"])
    is_judged = not prediction["verdict"].startswith("not judged")
    # a video not judged keeps its prior as score (what submission.csv holds), but says it was not judged
    return {"video": scored.video, "path": scored.path, "status": prediction["status"],
            "score": None if is_failed else round(float(prediction["score"]), 4), "verdict": prediction["verdict"],
            "n_faces": int(prediction["n_faces"]), "faces_used": int(prediction["faces_used"]),
            "track": int(prediction["track"]) if is_judged else None}


def _write_frames(scored: Any, frames_file: Any) -> None:
    """One JSON line per face: video, frame index, face index, box (full-resolution px), track, score."""
    if frames_file is None:
        return
    for face in scored.faces.itertuples():
        box = [None if value != value else round(float(value), 1) for value in (face.x1, face.y1, face.x2, face.y2)]
        frames_file.write(json.dumps({"video": scored.video, "frame": int(face.frame), "face": int(face.face),
                                      "box": box, "track": int(face.track), "prob": round(float(face.prob), 4),
                                      "score": None if face.score != face.score else round(float(face.score), 4)})
                          + "\n")
    frames_file.flush()


@contextlib.contextmanager
def _frames_output(frames_to: Optional[str]) -> Iterator[Any]:
    """stdout for "-", the named file (written atomically at the end) for a path, else None."""
    if frames_to is None:
        yield None
    elif frames_to == "-":
        yield sys.stdout
    else:
        from dfhelpers import files

        with files.atomic_path(Path(frames_to)) as tmp, open(tmp, "w") as handle:
            yield handle


def _explain(scored: Any, row: dict[str, Any], scorer: Any, out_dir: Path) -> Path:
    """OUT_DIR/<video stem>.png: crops of the track that decided, their heatmaps and face scores."""
    from dfhelpers import evaluation, explain

    title = f"{scored.video}: {row['verdict']} ({row['score']:.3f})"
    with _native_stderr_captured():  # Grad-CAM needs Keras: loaded now when the scores came from ONNX
        keras_model = scorer.model
    explained = explain.explain_video(keras_model, scored.crops, scored.faces, row["track"], title)
    return evaluation.save_figures({Path(scored.video).stem: evaluation.explanation_figure([explained])}, out_dir)[0]


def _report(name: str, metrics: dict[str, Any], folder: Path) -> str:
    """The text `evaluate` prints for one folder: counts, the metrics table, notes, where files went."""
    import pandas as pd

    from dfhelpers.metrics import metrics_table

    counts = metrics["label_counts"]
    boot = metrics["bootstrap"]
    lines = [f"== {name}: {metrics['n_videos']} videos ({counts['REAL']} REAL, {counts['FAKE']} FAKE); "
             f"{metrics['n_prior']} not judged, scored with the prior (no face {metrics['n_no_face']}, "
             f"too few faces {metrics['n_few_faces']}, unreadable {metrics['n_unreadable']})",
             f"   {boot['confidence']:.0%} intervals: {boot['n']} bootstrap resamples of the videos, seed {boot['seed']}"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        lines.append(metrics_table(metrics).to_string())
    notes = sorted(set(metrics["notes"] + metrics.get("frame", {}).get("notes", [])))
    notes += [f"{group['column']} {group['value']}: {note}" for group in metrics.get("breakdown", [])
              for note in group["notes"] if note not in notes]
    lines += [f"   note: {note}" for note in notes]
    lines.append(f"   reports: {folder}")
    return "\n".join(lines)


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Hold back what TensorFlow's C++ start-up writes to stderr (info lines TF_CPP_MIN_LOG_LEVEL
    cannot silence since absl logging); replay it if loading fails, so nothing useful is lost."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved_fd, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


def _emit(row: dict[str, Any], as_json: bool, width: int, shown: bool = True) -> None:
    from tqdm.auto import tqdm

    if not shown:
        return
    if as_json:
        line = json.dumps({key: value for key, value in row.items() if key != "track"})
    else:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        line = (f"{row['video']:<{width}}  {score:>5}  {row['verdict'] or '-':<19}  {row['n_faces']:>5}  "
                f"{row['status']}")
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
