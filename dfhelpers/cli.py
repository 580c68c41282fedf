"""The `dfdetect` command: score videos with a trained model outside the notebooks."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `dfdetect` console script; returns the exit code.

    0: every input scored; 1: some input could not be read (its row says why);
    2: usage, config or model error (one line on stderr, nothing scored).
    """
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().error("choose a command: predict")
    # TensorFlow's start-up chatter would bury the progress bar; real errors still show
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dfhelpers.errors import DfdetectError

    try:
        return predict(args.inputs, Path(args.model), config_path=args.config, as_json=args.json,
                       progress=not args.quiet)
    except DfdetectError as err:
        print(f"dfdetect: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE


def predict(inputs: list[str], model_path: Path, config_path: Optional[str] = None, as_json: bool = False,
            progress: bool = True) -> int:
    """Score every video named or found in `inputs`, print one row (or JSON line) each, return the exit code.

    Raises:
        ConfigError: the config file is malformed. ModelLoadError: the model is missing or corrupt.
    """
    from dfhelpers import scoring

    faces_cfg, score_cfg = _settings(config_path)
    paths, bad_inputs = expand_inputs(inputs)
    with _native_stderr_captured():
        scorer = scoring.VideoScorer(model_path, faces_cfg, score_cfg).load()  # fail fast, before any video
    width = max([len(Path(p).name) for p in paths] + [len(i) for i, _ in bad_inputs] + [5])
    if not as_json:
        print(f"{'VIDEO':<{width}}  {'SCORE':>5}  {'VERDICT':<7}  {'FACES':>5}  STATUS", flush=True)
    n_failed = 0
    for input_name, reason in bad_inputs:
        _emit({"video": input_name, "path": input_name, "status": reason, "score": None, "verdict": None,
               "n_faces": 0, "faces_used": 0}, as_json, width)
        n_failed += 1
    for scored in scoring.score_paths(paths, scorer, progress=progress):
        row = _result_row(scored, score_cfg)
        n_failed += scoring.is_failed(row["status"])
        _emit(row, as_json, width)
    return EXIT_SOME_FAILED if n_failed else EXIT_OK


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


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="dfdetect", description="Deepfake-video detection with a trained dfdetect model.")
    commands = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    predict_cmd = commands.add_parser(
        "predict", help="score videos: P(FAKE) per video",
        description="Score videos with a trained model: a table (or JSON lines) on stdout, progress on stderr. "
                    "Exit 0: all scored; 1: some input failed; 2: usage, config or model error.")
    predict_cmd.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR",
                             help="video files, or folders scanned for .mp4 .mov .avi .mkv .webm")
    predict_cmd.add_argument("--model", required=True, metavar="M.keras", help="a model saved by notebook 04")
    predict_cmd.add_argument("--json", action="store_true", help="one JSON object per video instead of a table")
    predict_cmd.add_argument("--config", metavar="C.yaml",
                             help="take the faces: and score: settings from this run config (default: built-in)")
    predict_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


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
    score = None if is_failed else round(float(prediction["score"]), 4)
    verdict = None if is_failed else ("FAKE" if prediction["score"] >= score_cfg.threshold else "REAL")
    return {"video": scored.video, "path": scored.path, "status": prediction["status"], "score": score,
            "verdict": verdict, "n_faces": int(prediction["n_faces"]), "faces_used": int(prediction["faces_used"])}


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


def _emit(row: dict[str, Any], as_json: bool, width: int) -> None:
    from tqdm.auto import tqdm

    if as_json:
        line = json.dumps(row)
    else:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        line = f"{row['video']:<{width}}  {score:>5}  {row['verdict'] or '-':<7}  {row['n_faces']:>5}  {row['status']}"
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
