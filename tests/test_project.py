import fnmatch
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra
                                               if not r.startswith(project["name"])}  # dev takes dfdetect[torch]
    environment = yaml.safe_load((PROJECT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert sorted(set(pip_section)) == sorted(declared)
    assert "python=3.11" in environment["dependencies"]


def test_constraints_pin_every_declared_package():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = requirement_names(project["dependencies"] + extras["dev"] + extras["torch"]) - {project["name"]}
    pinned = requirement_names([line for line in (PROJECT / "constraints.txt").read_text().splitlines()
                                if line and not line.startswith("#")])
    assert declared <= pinned, declared - pinned


def test_the_default_install_has_no_torch_only_the_torch_extra_and_dev_have_it():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    torch_side = {"torch", "torchvision", "facenet-pytorch"}
    assert not requirement_names(project["dependencies"]) & torch_side
    assert requirement_names(project["optional-dependencies"]["torch"]) == torch_side
    assert "dfdetect[torch]" in project["optional-dependencies"]["dev"]


def test_committed_notebooks_have_a_parameters_cell_and_no_stray_outputs():
    for path in sorted((PROJECT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), path.name
        for cell in cells:
            if cell["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" not in "".join(cell["source"]):
                assert not cell.get("outputs"), f"{path.name}: strip outputs"


def makefile_targets() -> set[str]:
    text = (PROJECT / "Makefile").read_text()
    return {name for line in text.splitlines() if (m := re.match(r"^([\w.-]+)\s*:(?!=)", line))
            for name in [m.group(1)]}


def test_ci_runs_make_test_and_fails_when_it_fails(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    make = fake_bin / "make"  # records how it was called, then fails as a failing test run would
    make.write_text(f'#!/bin/sh\necho "$PWD $*" > {tmp_path / "called"}\nexit 3\n')
    make.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(PROJECT / ".ci" / "run")], env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode != 0
    assert (tmp_path / "called").read_text().split() == [str(PROJECT), "test"]


def test_every_make_command_in_the_readme_is_a_makefile_target():
    commands = re.findall(r"\bmake ([a-z][\w-]*)", (PROJECT / "README.md").read_text())
    assert {"demo", "test"} <= set(commands)
    assert set(commands) <= makefile_targets(), set(commands) - makefile_targets()


def test_every_document_the_readme_links_to_is_in_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (PROJECT / "README.md").read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/design.md" in local and "docs/face-sources.md" in local
    assert [link for link in local if not (PROJECT / link).exists()] == []


def test_the_mtcnn_weights_their_licence_and_readme_are_package_data():
    patterns = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = sorted(path.relative_to(PROJECT / "dfhelpers").as_posix()
                     for path in (PROJECT / "dfhelpers" / "weights" / "mtcnn").iterdir())
    assert shipped == [f"weights/mtcnn/{name}" for name in ("LICENSE.md", "README.md", "onet.pt", "pnet.pt", "rnet.pt")]
    assert [name for name in shipped if not any(fnmatch.fnmatch(name, p) for p in patterns["dfhelpers"])] == []
