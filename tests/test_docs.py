"""The documents quote only figures a results file holds or the configuration sets, and their links resolve.

A figure presented as a measurement (a number with a unit of time, speed, size or share, a ratio, an
interval in brackets, or a decimal next to AUC, log loss or accuracy) in README.md, docs/*.md, the
comments of configs/*.yaml and the notebooks' markdown cells is either a setting (a default of
dfhelpers/config.py, a value of configs/*.yaml or of a sample preset, of the same kind: seconds, fps,
MB, a share as a percentage) or a value of a benchmarks/results/*.json file that the same paragraph,
table row or comment names, rounded as the document shows it. docs/results.md is generated from those
files and checked by tests/test_report.py.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest
import yaml

from dfhelpers import config

PROJECT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT / "benchmarks" / "results"
GENERATED = PROJECT / "docs" / "results.md"  # written by benchmarks/report.py, checked by tests/test_report.py

# True non-measurements that read like one; each phrase is removed from the text before it is checked.
ALLOWED = {
    "a coin's 0.693": "ln 2, the log loss of always answering 0.5",
    "gives 0.693": "ln 2, the log loss of always answering 0.5",
    "470 GB": "the size of Kaggle's DFDC download, as Kaggle states it",
    "AUC ≤ 0.60": "the bound tests/test_sample_shortcuts.py holds the sample to",
    "every 30 s (`TQDM_MININTERVAL`)": "the progress-bar interval run_all.py sets",
}

# A page another change adds; the README links to it ahead of time.
NOT_YET_WRITTEN = {PROJECT / "docs" / "face-datasets.md"}

NUMBER = r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?"
# a number (or a range of two) with the unit of a measurement; "1920x1080" is a size, not a ratio
WITH_UNIT = re.compile(rf"(?<![\w.])(?:({NUMBER})\s?[-–]\s?)?({NUMBER})\s?"
                       r"(ms|s|sec|seconds|min|minutes|%|×|x|fps|img/s|MB|GB)(?![\w/])")
METRIC = r"(?:AUC|log loss|accuracy|AP|EER)"
# a decimal right after a metric ("AUC 0.78", "AUC falls by 0.255") or right before one ("0.78 AUC")
AFTER_METRIC = re.compile(rf"\b{METRIC}\b[^.;:!?\n\d\[]{{0,24}}?(?<![\w.])({NUMBER})")
BEFORE_METRIC = re.compile(rf"(?<![\w.])({NUMBER})\s+{METRIC}\b")
INTERVAL = re.compile(rf"\[\s*({NUMBER}),\s*({NUMBER})\s*\]")
METRIC_COLUMN = re.compile(rf"{METRIC}|difference", re.IGNORECASE)
RESULTS_FILE = re.compile(r"\b\w+\.json\b")
LIST_ITEM = re.compile(r"\s*(?:[-*]|\d+\.)\s")
CELL = ":: "  # joins a table cell to its column's header in a passage

# the unit a document shows -> (kind of value, factor from the value to that unit)
UNITS = {"ms": [("seconds", 1000)], "s": [("seconds", 1)], "sec": [("seconds", 1)], "seconds": [("seconds", 1)],
         "min": [("seconds", 1 / 60)], "minutes": [("seconds", 1 / 60)], "×": [("ratio", 1)], "x": [("ratio", 1)],
         "%": [("metric", 100), ("share", 100)], "fps": [("rate", 1)], "img/s": [("rate", 1)],
         "MB": [("megabytes", 1)], "GB": [("megabytes", 1 / 1000), ("megabytes", 1 / 1024)],
         "metric": [("metric", 1)]}


class Figure(NamedTuple):
    where: str  # file and line
    text: str  # the number as shown
    unit: str  # a key of UNITS
    named: frozenset[str]  # the results files its passage names


def documents() -> list[Path]:
    """Every checked document."""
    paths = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")),
             *sorted((PROJECT / "configs").glob("*.yaml")), *sorted((PROJECT / "notebooks").glob("*.ipynb"))]
    return [path for path in paths if path != GENERATED]


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else path.name


# ---- what the results files and the configuration hold ------------------------------------------

@functools.cache
def results_values() -> dict[str, dict[str, tuple[float, ...]]]:
    """file name -> kind of value -> the values of that kind, for every benchmarks/results/*.json."""
    values: dict[str, dict[str, tuple[float, ...]]] = {}
    for path in sorted(RESULTS_DIR.glob("*.json")):
        by_kind: dict[str, list[float]] = {}
        for key_path, value in _leaves(json.loads(path.read_text())):
            if kind := _result_kind("/".join(key_path)):
                by_kind.setdefault(kind, []).append(value)
        values[path.name] = {kind: tuple(found) for kind, found in by_kind.items()}
    return values


@functools.cache
def setting_values() -> dict[str, tuple[float, ...]]:
    """kind of value -> every such number config.py's defaults, configs/*.yaml and the sample presets set."""
    sections = [config.SampleConfig, config.MetadataConfig, config.FacesConfig, config.SplitConfig,
                config.TrainConfig, config.ScoreConfig]
    defaults = [{field.name: getattr(section(), field.name) for field in dataclasses.fields(section)}
                for section in sections]
    configs = [yaml.safe_load(path.read_text()) for path in sorted((PROJECT / "configs").glob("*.yaml"))]
    planning = ast.parse((PROJECT / "dfhelpers" / "sample" / "planning.py").read_text())
    presets = [ast.literal_eval(node.value) for node in planning.body
               if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "PRESETS" for target in node.targets)]
    values: dict[str, list[float]] = {}
    for source in (*defaults, *configs, *presets):
        for key_path, value in _leaves(source):
            if kind := _setting_kind(key_path[-1] if key_path else "", value):
                values.setdefault(kind, []).append(value)
    return {kind: tuple(found) for kind, found in values.items()}


def _result_kind(key_path: str) -> str | None:
    """What a results value measures, from its key path; None for counts and settings."""
    if re.search(r"vs_|speedup|ratio", key_path):
        return "ratio"
    if re.search(r"rss|_mb\b", key_path):
        return "megabytes"
    if re.search(r"img_s|fps", key_path):
        return "rate"
    if "better_share" in key_path:
        return "share"
    if re.search(r"(^|/)(video|intervals|per_method|difference)(/|$)|frame_auc", key_path):
        return "metric"
    if re.search(r"(^|_|/)s($|_|/)|seconds", key_path):
        return "seconds"
    return None


def _setting_kind(key: str, value: float) -> str | None:
    if key == "seconds" or key.endswith("_s"):
        return "seconds"
    if key == "fps":
        return "rate"
    if key.endswith("_mb"):
        return "megabytes"
    return "share" if 0 < value <= 1 else None


def _leaves(value: Any, key_path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """(key path, number) of every number in nested dicts, lists and tuples."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*key_path, str(key)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item, key_path)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key_path, float(value)


# ---- the passages of a document and the figures in them ----------------------------------------

def passages(path: Path) -> Iterator[tuple[int, str]]:
    """(line or cell number, text) of each passage: a markdown paragraph, list item or table row
    (outside code blocks), a YAML comment with its continuation lines."""
    if path.suffix == ".yaml":
        yield from _yaml_comments(path.read_text())
    elif path.suffix == ".ipynb":
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
                yield from ((index, text) for _, text in _markdown(source))
    else:
        yield from _markdown(path.read_text())


def _markdown(text: str) -> Iterator[tuple[int, str]]:
    paragraph: list[str] = []
    start, header, in_code = 0, None, False
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                yield number, "\n".join(f"{head}{CELL}{cell}" for head, cell in zip(header, cells))
            continue
        header = None
        if paragraph and (not line.strip() or LIST_ITEM.match(line)):
            yield start, "\n".join(paragraph)
            paragraph = []
        if line.strip():
            start = start if paragraph else number
            paragraph.append(line)


def _yaml_comments(text: str) -> Iterator[tuple[int, str]]:
    comment: list[str] = []
    start = 0
    for number, line in enumerate([*text.splitlines(), "end"], start=1):
        if comment and not line.lstrip().startswith("#"):
            yield start, " ".join(comment)
            comment = []
        if "#" in line:
            start = start if comment else number
            comment.append(line[line.index("#") + 1:].strip())


def figures(path: Path) -> Iterator[Figure]:
    """Every figure one document presents as a measurement."""
    names = set(results_values())
    for line, text in passages(path):
        named = frozenset(RESULTS_FILE.findall(text)) & names
        where = f"{_shown(path)}:{line}"
        for phrase in ALLOWED:
            text = text.replace(phrase, "")
        text = re.sub(r"`[^`]*`", "", text)  # keys, commands and file names, not prose
        text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
        rows = [row.partition(CELL) if CELL in row else ("", "", row) for row in text.splitlines()]
        for head, _, cell in rows:
            if METRIC_COLUMN.search(head):
                yield from (Figure(where, number, "metric", named)
                            for number in re.findall(rf"(?<![\w.]){NUMBER}", cell) if "." in number)
        text = "\n".join(cell for _, _, cell in rows)
        for match in WITH_UNIT.finditer(text):
            yield from (Figure(where, number, match.group(3), named) for number in match.group(1, 2) if number)
        for pattern in (AFTER_METRIC, BEFORE_METRIC):
            yield from (Figure(where, match.group(1), "metric", named)
                        for match in pattern.finditer(text) if "." in match.group(1))
        for match in INTERVAL.finditer(text):
            yield from (Figure(where, number, "metric", named) for number in match.groups())


def shows(value: float, shown: str) -> bool:
    """Whether `value`, rounded to the decimals `shown` has, is written as `shown`; a figure shown
    without a sign may give a difference's size ("falls by 0.255")."""
    decimals = len(shown.partition(".")[2])
    number = float(shown.replace(",", ""))
    candidates = [value] if shown[0] in "+-" else [value, abs(value)]
    return any(f"{candidate:.{decimals}f}" == f"{number:.{decimals}f}" for candidate in candidates)


def is_sourced(figure: Figure) -> bool:
    """A setting of the figure's kind, or a value of that kind in a results file its passage names."""
    scales = UNITS[figure.unit]
    settings, results = setting_values(), results_values()
    if any(shows(value * factor, figure.text) for kind, factor in scales for value in settings.get(kind, ())):
        return True
    return any(shows(value * factor, figure.text)
               for name in figure.named for kind, factor in scales for value in results[name].get(kind, ()))


def unsourced(path: Path) -> list[str]:
    """Each figure of the document that is neither a setting nor in a results file it names."""
    return [f"{figure.where}: {figure.text} {figure.unit} "
            + (f"is in none of {', '.join(sorted(figure.named))}" if figure.named else "names no results file")
            for figure in dict.fromkeys(figures(path)) if not is_sourced(figure)]


# ---- the documents ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", documents(), ids=_shown)
def test_every_measured_figure_is_a_setting_or_in_the_results_file_it_names(path):
    assert unsourced(path) == [], ("quote the figure as docs/results.md shows it and name its "
                                   "benchmarks/results/*.json file beside it, or link to docs/results.md")


def test_every_allowed_phrase_is_still_used():
    text = "\n".join(passage for path in documents() for _, passage in passages(path))
    assert [phrase for phrase in ALLOWED if phrase not in text] == []


MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


@pytest.mark.parametrize("path", [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))], ids=_shown)
def test_every_relative_link_points_to_an_existing_file_and_heading(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    broken = []
    for target in MARKDOWN_LINK.findall(text) + REFERENCE_LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if linked in NOT_YET_WRITTEN and not linked.exists():
            continue
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert broken == []


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


# ---- the check itself, on the kinds of mistake it is for -----------------------------------------

@pytest.fixture
def document(tmp_path):
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        if path.suffix == ".ipynb":
            text = json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": text}]})
        path.write_text(text)
        return path
    return write


def test_a_difference_rounded_otherwise_than_its_results_file_is_reported(document):
    header = "| change | AUC difference [95%] | file |\n|---|---|---|\n"
    wrong = document("wrong.md", header + "| seed | -0.048 [-0.180, +0.057] | "
                                          "`accuracy_faceforensics_heldout_mixed_seed_1.json` |\n")
    right = document("right.md", header + "| seed | -0.049 [-0.180, +0.057] | "
                                           "`accuracy_faceforensics_heldout_mixed_seed_1.json` |\n")
    assert [line.split(": ")[1] for line in unsourced(wrong)] == [
        "-0.048 metric is in none of accuracy_faceforensics_heldout_mixed_seed_1.json"]
    assert unsourced(right) == []


def test_a_figure_that_names_no_results_file_is_reported_even_when_some_file_holds_a_close_value(document):
    assert unsourced(document("load.md", "Load moves the same benchmark by up to 1.7×.\n")) != []
    assert unsourced(document("wrong.yaml", 'bootstrap: 1000  # on 27 test videos "AUC 1.00" comes with its interval\n'))


def test_a_notebook_figure_is_checked_against_the_file_it_names(document):
    wrong = document("wrong.ipynb", "The original loop: about 75 s for a 10 s 1080p video.")
    right = document("right.ipynb", "The original loop: 85.2 s for a 10 s 1080p video (`faces_dfdc_generated.json`).")
    assert [line.split(": ")[1] for line in unsourced(wrong)] == ["75 s names no results file"]
    assert unsourced(right) == []


def test_settings_need_no_results_file(document):
    assert unsourced(document("settings.md", "99 videos of 2.5 s at 15 fps; 95% intervals; 20% shifts.\n")) == []
