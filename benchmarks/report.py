"""docs/results.md: every benchmark and accuracy figure, generated from benchmarks/results/*.json."""

# python benchmarks/report.py writes docs/results.md and prints its path; --check exits 1 when the
# file on disk differs from what it would write. The README's figures come from JSON files the
# benchmarks wrote (with their command and machine line), and the tables a reader sees come from
# those files through this script only, so tests/test_report.py can tell when they are stale.

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "docs" / "results.md"
MISSING = "—"

Record = dict[str, Any]
Column = tuple[str, Callable[[Record], str]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check:
        problem = check(args.results, args.out)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    print(write(args.results, args.out))
    return 0


def render(results_dir: Path) -> str:
    """The whole markdown page for the JSON files of `results_dir`, the same for the same files."""
    by_kind: dict[str, list[tuple[str, Record]]] = {kind: [] for kind in SECTIONS}
    for name, record in load_results(results_dir):
        by_kind.setdefault(kind_of(name, record), []).append((name, record))
    lines = _header(results_dir)
    for kind, results in by_kind.items():
        lines += _section(kind, results)
    return "\n".join(lines).rstrip("\n") + "\n"


def write(results_dir: Path, output: Path) -> Path:
    """Write the page atomically (a temporary file beside it, then a rename); returns its path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    text = render(results_dir)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return output


def check(results_dir: Path, output: Path) -> str | None:
    """None when `output` holds what render() would write; otherwise a one-line message saying so."""
    shown = _shown_path(output)
    if not output.is_file():
        return f"{shown} is missing: run `python benchmarks/report.py` to generate it"
    if output.read_text(encoding="utf-8") != render(results_dir):
        return (f"{shown} is out of date with {_shown_path(results_dir)}/*.json: "
                f"run `python benchmarks/report.py` and commit the result")
    return None


def load_results(results_dir: Path) -> list[tuple[str, Record]]:
    """(file name, its JSON) for every *.json of the folder, sorted by file name."""
    return [(path.name, _read(path)) for path in sorted(results_dir.glob("*.json"), key=lambda path: path.name)]


def _read(path: Path) -> Record:
    """One results file; a file that is not a JSON object stops the report with its name."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path}: not valid JSON ({error}); fix or remove the file") from error
    if not isinstance(record, dict):
        raise SystemExit(f"{path}: holds a JSON {type(record).__name__}, not an object; fix or remove the file")
    return record


def kind_of(name: str, record: Record) -> str:
    """The benchmark kind: the `benchmark` key where present, else the file name's prefix."""
    if "benchmark" in record:
        return BENCHMARK_KINDS.get(str(record["benchmark"]), str(record["benchmark"]))
    for kind in sorted(SECTIONS, key=len, reverse=True):  # the longest prefix wins
        if name.startswith(f"{kind}_"):
            return kind
    return "other"


def format_number(value: Any) -> str:
    """A JSON value for display: numbers to 3 significant places, booleans as yes/no, None as —."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    return str(value)


def _format_float(value: float) -> str:
    """As the JSON writes it when it has 3 significant places or fewer (0.31, 1.0), else rounded
    to 3 with its zeros kept (2.997 -> 3.00); 1000 and over as a whole number (2517)."""
    if value != value:
        return MISSING
    if abs(value) >= 1000:
        return str(round(value))
    if float(f"{value:.3g}") == value:
        return repr(value)
    return f"{value:#.3g}".rstrip(".")


# ---- cells: one figure of a record, as text ------------------------------------------------

def _value(record: Record, key: str) -> Any:
    """The value at a dotted key ("folder.peak_rss_mb"), None where any part is missing."""
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _number(key: str, unit: str = "") -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        value = _value(record, key)
        return format_number(value) + (f" {unit}" if unit and value is not None else "")
    return cell


def _model_calls(record: Record) -> str:
    """The model call per video, without and with the mirror: "329 / 659 ms (50 faces)"; older runs timed one."""
    engine_s, mirror_s = _value(record, "model_call.engine_s"), _value(record, "model_call.mirror_s")
    if engine_s is None or mirror_s is None:
        return MISSING
    faces = _value(record, "model_call.faces_per_video")
    return f"{engine_s * 1000:.0f} / {mirror_s * 1000:.0f} ms ({faces:.0f} faces)"


def _with_ratio(key: str, ratio_key: str) -> Callable[[Record], str]:
    """Seconds with a ratio beside them: "0.928 s (0.31×)"."""
    def cell(record: Record) -> str:
        if _value(record, key) is None:
            return MISSING
        return f"{format_number(_value(record, key))} s ({format_number(_value(record, ratio_key))}×)"
    return cell


def _with_range(key: str, range_key: str) -> Callable[[Record], str]:
    """A median with its min–max: "1.46 (1.41–1.51)"; the median alone where the range is missing."""
    def cell(record: Record) -> str:
        low_high = _value(record, range_key)
        if not isinstance(low_high, list) or len(low_high) != 2:
            return _number(key)(record)
        return f"{_number(key)(record)} ({format_number(low_high[0])}–{format_number(low_high[1])})"
    return cell


def _as_original(key: str, ratio_key: str) -> Callable[[Record], str]:
    """The extrapolated original loop, "not run" where it ran on 0 frames (--baseline-frames 0)."""
    def cell(record: Record) -> str:
        if _value(record, "original_extrapolated_from_frames") == 0:
            return "not run"
        return _with_ratio(key, ratio_key)(record)
    return cell


def _with_interval(metric: str) -> Callable[[Record], str]:
    """An accuracy metric with its 95% interval: "0.625 [0.52, 0.73]"."""
    def cell(record: Record) -> str:
        return f"{format_number(_value(record, f'video.{metric}'))} {_interval(_value(record, f'intervals.{metric}'))}"
    return cell


def _difference(metric: str) -> Callable[[Record], str]:
    """A paired difference with its interval, signed: "+0.030 [-0.044, +0.113]"."""
    def cell(record: Record) -> str:
        value = _value(record, f"against.difference.{metric}")
        low, high = _value(record, f"against.intervals.{metric}") or (None, None)
        if value is None:
            return "—"
        signed = lambda number: "—" if number is None else f"{number:+.3f}"  # noqa: E731
        return f"{signed(value)} [{signed(low)}, {signed(high)}]"
    return cell


def _share(key: str) -> Callable[[Record], str]:
    """A share of bootstrap draws as a percentage of them: "78% of draws"."""
    def cell(record: Record) -> str:
        value = _value(record, key)
        return "—" if value is None else f"{100 * value:.0f}% of draws"
    return cell


def _interval(low_high: Any) -> str:
    if not isinstance(low_high, list) or len(low_high) != 2:
        return f"[{MISSING}]"
    return f"[{format_number(low_high[0])}, {format_number(low_high[1])}]"


def _recall(record: Record) -> str:
    """Frame recall, agreement at IoU ≥ 0.5, faces missed / invented, from the JSON's counts."""
    counts = _value(record, "recall_counts") or {}
    return (f"frame recall {format_number(_value(record, 'frame_recall'))} "
            f"({format_number(counts.get('ref_frames'))} frames with a face); "
            f"agreement {format_number(_value(record, 'agreement_iou_0_5'))}; "
            f"faces missed / invented {format_number(counts.get('missed_faces'))} / "
            f"{format_number(counts.get('invented_faces'))}")


def _decode_floor(record: Record) -> str:
    """The two decode floors of faces and inference runs: "2.88 / 1.05" (every frame / sampled)."""
    return f"{_number('floor_every_frame_s_per_video')(record)} / {_number('floor_sampled_frames_s_per_video')(record)}"


def _without_work(record: Record) -> str:
    return f"{_number('without_work.help.seconds')(record)}, {_number('without_work.usage_error.seconds')(record)}"


def _imports(record: Record) -> str:
    return f"{_number('torch_imported')(record)} / {_number('tensorflow_imported')(record)}"


def _folder_run(record: Record) -> str:
    """The folder run of bench_startup: "50 videos, peak 958 MB, 76 s"."""
    if _value(record, "folder") is None:
        return MISSING
    return (f"{_number('folder.videos')(record)} videos, peak {_number('folder.peak_rss_mb', 'MB')(record)}, "
            f"{_number('folder.seconds', 's')(record)}")


def _label_counts(record: Record) -> str:
    counts = _value(record, "label_counts")
    if not isinstance(counts, dict):
        return MISSING
    return ", ".join(f"{label} {format_number(count)}" for label, count in counts.items())


def _held_out(record: Record) -> str:
    """Which videos were measured: the whole folder or one split of a run's split.csv."""
    if "groups_from" not in record:
        return MISSING
    if record["groups_from"] is None:
        return "whole folder"
    return f"`{record.get('split', MISSING)}` split of `{record['groups_from']}`"


def _machine(record: Record) -> str:
    """The machine line: "AMD EPYC, 2 cores, load 2.85 → 2.02"."""
    if "machine" not in record:
        return MISSING
    return (f"{format_number(_value(record, 'machine.cpu'))}, {format_number(_value(record, 'machine.cores'))} cores, "
            f"load {format_number(_value(record, 'machine.load_average_start'))} → "
            f"{format_number(_value(record, 'machine.load_average_end'))}")


def _code(key: str) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        value = _value(record, key)
        return MISSING if value is None else f"`{value}`"
    return cell


def _table(columns: list[Column], results: list[tuple[str, Record]]) -> list[str]:
    """One row per file: its name, then one cell per column."""
    return _rows(["file", *(header for header, _ in columns)],
                 [[f"`{name}`", *(cell(record) for _, cell in columns)] for name, record in results])


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; a `|` inside a cell is escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


# ---- sections -------------------------------------------------------------------------------

FACES_COLUMNS: list[Column] = [
    ("videos", _number("videos")), ("sizes", _number("sizes")), ("MTCNN runtime", _number("mtcnn_runtime")),
    ("detect every", _number("detect_every")), ("workers", _number("workers")), ("repeats", _number("repeats")),
    ("decode floor: every frame / sampled (s)", _decode_floor),
    ("face stage per video (× every-frame floor)", _with_ratio("ours_stage_s_per_video", "ours_stage_vs_every_frame_floor")),
    ("one video, one worker (× its own floor)", _with_ratio("ours_one_video_one_worker_s", "ours_one_video_vs_own_floor")),
    ("baseline: same frames, full resolution (stage faster by)",
     _with_ratio("baseline_same_frames_s_per_video", "speedup_vs_baseline")),
    ("as original, extrapolated (stage faster by)", _as_original("original_every_frame_s_per_video", "speedup_vs_original")),
    ("recall against full-resolution MTCNN", _recall), ("worker peak RSS", _number("worker_peak_rss_mb", "MB")),
]

INFERENCE_COLUMNS: list[Column] = [
    ("videos", _number("videos")), ("runtime", _number("runtime")), ("model weights", _number("model_weights")),
    ("repeats", _number("repeats")), ("model load", _number("model_load_s", "s")),
    ("decode floor: every frame / sampled (s)", _decode_floor),
    ("whole folder per video (× every-frame floor)", _with_ratio("ours_folder_s_per_video", "ours_folder_vs_every_frame_floor")),
    ("one video alone (× its own floor)", _with_ratio("ours_one_video_s", "ours_one_video_vs_own_floor")),
    ("baseline: same frames, full resolution (one video faster by)",
     _with_ratio("baseline_same_frames_s_per_video", "speedup_vs_baseline_one_video")),
    ("as original, extrapolated (folder faster by)",
     _as_original("original_every_frame_s_per_video", "speedup_vs_original_folder")),
    ("recall against full-resolution MTCNN", _recall),
    ("model call per video: without / with `score.mirror`", _model_calls),
]

STARTUP_COLUMNS: list[Column] = [
    ("runtime", _number("runtime")), ("MTCNN runtime", _number("mtcnn_runtime")), ("repeats", _number("repeats")),
    ("per-video work, warm (s)", _with_range("phases_s.video_warm", "phases_min_max_s.video_warm")),
    ("first result / exit (s)", lambda r: f"{_with_range('first_result_s', 'first_result_min_max_s')(r)} / "
                                          f"{_number('exit_s')(r)}"),
    ("start-up (s)", _number("startup_s")), ("peak RSS, one video", _number("one_video_peak_rss_mb", "MB")),
    ("folder run", _folder_run), ("`--help`, usage error (s)", _without_work),
    ("torch / TensorFlow imported", _imports),
]

TRAIN_INPUT_COLUMNS: list[Column] = [
    ("input pipeline, given fakes (img/s)", _number("pipeline_img_s")),
    ("input pipeline, self-blend (img/s)", _number("self_blend_pipeline_img_s")),
    ("training step (img/s)", _number("train_step_img_s")), ("pipeline / step", _number("ratio")),
]

ACCURACY_COLUMNS: list[Column] = [
    ("videos", _number("n_videos")), ("labels", _label_counts), ("video AUC [95%]", _with_interval("auc")),
    ("log loss [95%]", _with_interval("log_loss")), ("accuracy [95%]", _with_interval("accuracy")),
    ("AP", _number("video.ap")), ("EER", _number("video.eer")), ("frame AUC", _number("frame_auc")),
    ("not judged", _number("n_not_judged")), ("videos measured", _held_out), ("folder", _code("folder")),
]

COMPARISON_COLUMNS: list[Column] = [
    ("baseline", lambda record: " ".join([f"`{Path(str(_value(record, 'against.model'))).name}`",
                                          *(f"`{setting}`" for setting in _value(record, "against.settings") or [])])),
    ("videos", _number("against.n_videos")),
    ("AUC difference [95%]", _difference("auc")), ("log loss difference [95%]", _difference("log_loss")),
    ("AUC higher in", _share("against.better_share.auc")),
    ("log loss lower in", _share("against.better_share.log_loss")),
]

INGEST_COLUMNS: list[Column] = [
    ("items (of the folder)", lambda record: f"{format_number(_value(record, 'items'))} "
                                             f"({format_number(_value(record, 'items_in_folder'))})"),
    ("faces found", _number("faces_found")), ("workers", _number("workers")),
    ("01 list (s)", _number("stage_s.01_list")), ("02 faces (s)", _number("stage_s.02_faces")),
    ("03 split (s)", _number("stage_s.03_split")), ("items/s", _number("items_per_s")),
    ("whole folder at this rate (s)", _number("whole_folder_s_at_this_rate")), ("peak RSS", _number("peak_rss_mb", "MB")),
]

INSTALL_COLUMNS: list[Column] = [
    (f"{install}: {what}", _number(f"{install}.{key}", unit))
    for install in ("scoring", "full")
    for what, key, unit in (("site-packages", "site_packages_mb", "MB"), ("distributions", "n_distributions", ""),
                            ("`--help` (s)", "help_s", ""), ("`predict`, one video (s)", "predict_s", ""))
]

MODEL_CARD_FIELDS = ("backbone", "fakes", "epochs", "image_size", "best_epoch", "calibration", "temperature", "offset",
                     "n_train_crops", "seconds", "trained_at", "init_sha256")

PROVENANCE_COLUMNS: list[Column] = [
    ("command", _code("command")), ("commit", _code("commit")), ("machine", _machine),
]


def _startup(results: list[tuple[str, Record]]) -> list[str]:
    """The headline table, then every phase's median seconds (phases differ between versions)."""
    phases: list[str] = []
    for _, record in results:
        phases += [phase for phase in _value(record, "phases_s") or {} if phase not in phases]
    phase_columns = [(f"`{phase}`", _number(f"phases_s.{phase}")) for phase in phases]
    return [*_table(STARTUP_COLUMNS, results), "", "Phases, each in a fresh interpreter (median s):", "",
            *_table(phase_columns, results)]


def _accuracy(results: list[tuple[str, Record]]) -> list[str]:
    """Video metrics with intervals, AUC per manipulation method, and what the model card says."""
    method_rows = [(name, method, figures) for name, record in results
                   for method, figures in sorted((_value(record, "per_method") or {}).items())]
    method_lines = _rows(["file", "method", "AUC [95%]", "videos"],
                         [[f"`{name}`", method, f"{format_number(figures.get('auc'))} "
                           f"{_interval(figures.get('auc_interval'))}", format_number(figures.get("n_videos"))]
                          for name, method, figures in method_rows])
    card_columns = [(field, _number(f"model_card.{field}")) for field in MODEL_CARD_FIELDS]
    compared = [(name, record) for name, record in results if _value(record, "against")]
    comparison_lines = ["", "Paired comparisons (`--against`): the file's model minus the baseline on the same "
                        "videos, each bootstrap draw taking the same videos for both:", "",
                        *_table(COMPARISON_COLUMNS, compared)] if compared else []
    return [*_table(ACCURACY_COLUMNS, results), "", "AUC per manipulation method, each against all REAL videos:", "",
            *(method_lines if method_rows else ["No file has `per_method`."]), *comparison_lines, "", "Model card:", "",
            *_table(card_columns, results)]


def _learning_curve(results: list[tuple[str, Record]]) -> list[str]:
    """Per file: one row per point (families trained on, in-domain and cross-dataset figures), then a chart."""
    lines: list[str] = []
    for name, record in results:
        points = sorted(record.get("points", []), key=lambda point: int(point["n_train_families"]))
        rows = [[format_number(point["n_train_families"]), format_number(point["n_train_crops"]),
                 format_number(point["train_seconds"]), format_number(point.get("epoch_seconds_median")),
                 format_number(point.get("train_peak_rss_mb")), *_figures(point.get("in_domain")),
                 *_figures(point.get("cross"))] for point in points]
        lines += [f"`{name}`:", "", *_rows(["train families", "train crops", "training (s)", "one epoch (s)",
                                            "training peak memory (MB)", "in-domain AUC [95%]",
                                            "in-domain log loss [95%]", "across datasets AUC [95%]",
                                            "across datasets log loss [95%]"], rows), ""]
        lines += _curve_chart(points)
    return lines


def _figures(measured: Record | None) -> list[str]:
    if not measured:
        return ["—", "—"]
    return [f"{format_number(measured['video'][metric])} {_interval(measured['intervals'][metric])}"
            for metric in ("auc", "log_loss")]


def _curve_chart(points: list[Record]) -> list[str]:
    """A Mermaid line chart of AUC against train families: in-domain first, across datasets second."""
    series = [[format_number(point[where]["video"]["auc"]) for point in points]
              for where in ("in_domain", "cross") if all(where in point for point in points)]
    if len(points) < 2 or not series:
        return []
    families = ", ".join(format_number(point["n_train_families"]) for point in points)
    lowest = min(float(value) for values in series for value in values)
    floor = min(0.5, int(lowest * 10) / 10)  # chance, or lower when a model ranks worse than chance
    return ["AUC against the families trained on (upper line in-domain, lower across datasets):", "",
            "```mermaid", "xychart-beta", f"    x-axis \"train families\" [{families}]",
            f"    y-axis \"AUC\" {floor} --> 1", *(f"    line [{', '.join(values)}]" for values in series), "```", ""]


def _other(results: list[tuple[str, Record]]) -> list[str]:
    """A kind this script has no table for: the files are still listed with their provenance."""
    return [f"This report has no table for this kind yet ({len(results)} file(s))."]


SECTIONS: dict[str, tuple[str, str, Callable[[list[tuple[str, Record]]], list[str]]]] = {
    "faces": ("Face stage", "`benchmarks/bench_faces.py`: seconds per video; × is the ratio to the decode floor "
              "of the same run; \"not run\" where the as-original loop ran on 0 frames (`--baseline-frames 0`).",
              partial(_table, FACES_COLUMNS)),
    "inference": ("Scoring", "`benchmarks/bench_inference.py`: seconds per video through `dfdetect`'s engine; × as "
                  "above.", partial(_table, INFERENCE_COLUMNS)),
    "startup": ("Start-up and memory of `dfdetect predict`", "`benchmarks/bench_startup.py`: median (min–max) of "
                "the repeats; start-up is the first result minus the per-video work.", _startup),
    "train_input": ("Training input", "`benchmarks/bench_train.py`: images per second of the input pipeline "
                    "against a training step.", partial(_table, TRAIN_INPUT_COLUMNS)),
    "accuracy": ("Accuracy", "`benchmarks/bench_accuracy.py`: video-level metrics with 95% bootstrap intervals "
                 "over videos.", _accuracy),
    "ingest": ("Face-image sets through notebooks 01-03", "`benchmarks/bench_ingest.py`: whole families of a "
               "face-image set listed, cropped and split as the notebooks do; peak memory of the process and its "
               "pool workers together.", partial(_table, INGEST_COLUMNS)),
    "install": ("Install size and start-up", "`benchmarks/bench_install.py`: the scoring install (`pip install "
                "dfdetect`) beside the full one (`dfdetect[full]`), built side by side; median of the repeats.",
                partial(_table, INSTALL_COLUMNS)),
    "learning_curve": ("How much data", "`benchmarks/bench_learning_curve.py`: the recipe trained on more and "
                       "more identity families; in-domain on the run's held-out test families, across datasets on "
                       "another labelled set, each with a 95% bootstrap interval over items.", _learning_curve),
}

BENCHMARK_KINDS = {"bench_faces": "faces", "bench_inference": "inference", "bench_startup": "startup",
                   "bench_train": "train_input", "accuracy": "accuracy", "learning_curve": "learning_curve",
                   "bench_install": "install", "bench_ingest": "ingest"}


def _section(kind: str, results: list[tuple[str, Record]]) -> list[str]:
    """Heading, one line on what the figures are, the kind's tables and where each file came from."""
    title, intro, tables = SECTIONS.get(kind, (f"Files of kind `{kind}`", "", _other))
    lines = [f"## {title}", ""] + ([intro, ""] if intro else [])
    if not results:
        return lines + [f"No `{kind}_*.json` in the results folder yet.", ""]
    return lines + tables(results) + ["", "Where each file came from:", "", *_table(PROVENANCE_COLUMNS, results), ""]


def _header(results_dir: Path) -> list[str]:
    return ["# Benchmark and accuracy results", "",
            f"Generated by `python benchmarks/report.py` from `{_shown_path(results_dir)}/*.json`; do not edit "
            "by hand (`tests/test_report.py` fails when this file is stale). Each row names the JSON file it "
            "comes from; numbers are shown as the file holds them, rounded to 3 significant places; \"—\" marks a figure the file "
            "does not have. The machine column gives the CPU, its cores and the load average at the start "
            "and end of the run.", ""]


def _shown_path(path: Path) -> str:
    """A path relative to the repository when inside it (docs/results.md), else as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write docs/results.md from benchmarks/results/*.json.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the output differs from what would be written")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of *.json (default: benchmarks/results)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="the page to write (default: docs/results.md)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
