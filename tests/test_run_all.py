import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, write_notebook):
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: [data]\n")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    marker = "from pathlib import Path\nPath(config_path).with_name('{}.done').write_text(str(overrides))"
    write_notebook(notebooks / "01_first.ipynb", marker.format("01"))
    write_notebook(notebooks / "02_broken.ipynb", "x = 1", "raise ValueError('bad crop in frame 7')")
    write_notebook(notebooks / "03_never.ipynb", marker.format("03"))
    return tmp_path


def run_all(project: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PROJECT / "run_all.py"), "--config", str(project / "run.yaml"),
               "--notebooks", str(project / "notebooks"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_stops_at_the_failing_notebook_and_names_it_the_cell_and_the_copy(project):
    result = run_all(project)
    assert result.returncode == 1
    assert "02_broken FAILED" in result.stderr
    assert "(raise ValueError('bad crop in frame 7')): ValueError: bad crop in frame 7" in result.stderr
    executed = project / "run" / "executed" / "02_broken.ipynb"
    assert f"executed copy: {executed}" in result.stderr and executed.is_file()
    assert (project / "01.done").is_file() and not (project / "03.done").exists()


def test_only_runs_one_notebook_and_passes_overrides(project):
    result = run_all(project, "--only", "3", "-p", "train.epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "[1/1] 03_never ok" in result.stdout
    assert (project / "03.done").read_text() == "{'train.epochs': 2}"
    assert not (project / "01.done").exists()


def test_bad_config_exits_2_with_a_one_line_message(project):
    (project / "run.yaml").write_text("work_dir: run\ndata_dirs: [data]\nfaces: {margn: 3}\n")
    result = run_all(project)
    assert result.returncode == 2
    assert "unknown key 'faces.margn'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_parameter_value_that_is_not_yaml_exits_2_with_one_line_naming_the_flag(project):
    result = run_all(project, "-p", "train.model_name", "a: b: c")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.strip().splitlines() if "error" in line]
    assert len(error_lines) == 1 and "-p: a value is not YAML" in error_lines[0]
    assert "Traceback" not in result.stderr and not (project / "01.done").exists()
