import json
import re
import tomllib
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    environment = yaml.safe_load((PROJECT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert sorted(set(pip_section)) == sorted(declared)
    assert "python=3.11" in environment["dependencies"]


def test_constraints_pin_every_declared_package():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    declared = requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    pinned = requirement_names([line for line in (PROJECT / "constraints.txt").read_text().splitlines()
                                if line and not line.startswith("#")])
    assert declared <= pinned, declared - pinned


def test_committed_notebooks_have_a_parameters_cell_and_no_stray_outputs():
    for path in sorted((PROJECT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), path.name
        for cell in cells:
            if cell["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" not in "".join(cell["source"]):
                assert not cell.get("outputs"), f"{path.name}: strip outputs"


def test_ci_calls_the_readme_test_command():
    assert "make test" in (PROJECT / ".ci" / "run").read_text()
    assert "make test" in (PROJECT / "README.md").read_text()
