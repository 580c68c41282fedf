import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from videos import face_video

PROJECT = Path(__file__).resolve().parents[1]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def project_table() -> dict:
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]


def every_requirement(project: dict) -> list[str]:
    """The base dependencies and every extra's, without the extras that name the project itself."""
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    return [r for r in project["dependencies"] + extras if requirement_names([r]) != {project["name"]}]


def pins() -> dict[str, str]:
    """constraints.txt as {normalized name: version}."""
    lines = [line for line in (PROJECT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in (line.split("==") for line in lines)}


def test_environment_yml_installs_the_project_with_pip_and_lists_no_package_of_its_own():
    environment = yaml.safe_load((PROJECT / "environment.yml").read_text())
    assert environment["dependencies"][:2] == ["python=3.11", "pip"] and len(environment["dependencies"]) == 3
    assert environment["dependencies"][2] == {"pip": ["-c constraints.txt", "-e .[full]"]}


def test_constraints_pin_every_declared_package():
    project = project_table()
    declared = requirement_names(every_requirement(project))
    assert declared <= set(pins()), declared - set(pins())


def test_each_lower_bound_is_the_version_constraints_txt_pins():
    pinned = pins()
    for requirement in every_requirement(project_table()):
        [name] = requirement_names([requirement])
        bound = re.search(r"(?:>=|==)\s*([\w.+]+)", requirement)
        assert bound and bound.group(1) == pinned[re.sub(r"[-_.]+", "-", name)], (requirement, pinned.get(name))


def test_constraints_txt_is_written_by_make_constraints(tmp_path):
    script = PROJECT / "tools" / "constraints.py"
    spec = importlib.util.spec_from_file_location("constraints_script", script)
    constraints_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constraints_script)
    text = (PROJECT / "constraints.txt").read_text()
    lines = text.removeprefix(constraints_script.HEADER).splitlines()
    assert text.startswith(constraints_script.HEADER) and not [line for line in lines if "#" in line]
    assert lines == sorted(lines, key=lambda line: line.split("==")[0].lower()) and all(re.fullmatch(r"[\w.-]+==[\w.+!]+", line) for line in lines)
    makefile = (PROJECT / "Makefile").read_text()
    assert "constraints" in makefile_targets() and "tools/constraints.py" in makefile


def test_the_base_install_scores_without_tensorflow_torch_or_jupyter_and_full_adds_them():
    project = project_table()
    extras = project["optional-dependencies"]
    training = {"tensorflow", "keras", "tf2onnx", "jupyterlab", "papermill", "ipykernel", "nbformat"}
    torch_side = {"torch", "torchvision", "facenet-pytorch"}
    assert not requirement_names(project["dependencies"]) & (training | torch_side)
    assert {"onnxruntime", "onnx", "opencv-python-headless", "av"} <= requirement_names(project["dependencies"])
    assert training <= requirement_names(extras["full"]) and not requirement_names(extras["full"]) & torch_side
    assert requirement_names(extras["torch"]) == torch_side
    assert "dfdetect[full,torch]" in extras["dev"]


def test_make_demo_installs_the_full_extra_and_make_test_the_dev_one():
    makefile = (PROJECT / "Makefile").read_text()
    installs = re.findall(r"^\t.*pip install (.*)", makefile, re.MULTILINE)  # recipe lines
    assert "--quiet -c constraints.txt -e '.[full]'" in installs and "--quiet -c constraints.txt -e '.[dev]'" in installs
    assert len(installs) == 2  # nothing installed beside the project (MTCNN's weights ship inside it)


def test_no_document_asks_for_facenet_pytorch_beside_the_install():
    paths = [PROJECT / "Makefile", PROJECT / "README.md", PROJECT / "environment.yml", *(PROJECT / "docs").glob("*.md")]
    asking = [path.name for path in paths if "--no-deps facenet-pytorch" in " ".join(path.read_text().split())]
    assert asking == []


def test_dfdetect_predict_and_evaluate_need_only_the_base_dependencies(tmp_path):
    """Both commands run on an ONNX model with every package outside the base install's requirements hidden."""
    hidden = modules_outside_the_base_install()
    assert {"tensorflow", "keras", "torch", "facenet_pytorch", "papermill"} <= hidden
    folder = tmp_path / "labelled"
    folder.mkdir()
    face_video(folder / "real.mp4", n_frames=4)
    face_video(folder / "fake.mp4", n_frames=5)
    (folder / "metadata.json").write_text(json.dumps({"real.mp4": {"label": "REAL"},
                                                       "fake.mp4": {"label": "FAKE", "original": "real.mp4"}}))
    model = mean_colour_onnx(tmp_path / "model.onnx")
    keras_file = tmp_path / "trained.keras"
    keras_file.write_bytes(b"scored only after Keras is imported")
    script = textwrap.dedent(f"""
        import sys
        class Hidden:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(hidden)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Hidden())
        from dfhelpers.cli import main
        assert main(["predict", {str(folder)!r}, "--model", {str(model)!r}, "--json", "--quiet"]) == 0
        assert main(["evaluate", {str(folder)!r}, "--model", {str(model)!r}, "--out", {str(tmp_path / "out")!r},
                     "--quiet"]) == 0
        assert main(["export", {str(keras_file)!r}]) == 2  # Keras is the full extra's: one line, no traceback
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len([line for line in result.stdout.splitlines() if line.startswith("{")]) == 2
    assert result.stderr.strip().splitlines()[-1].endswith("need pip install 'dfdetect[full]'")
    assert (tmp_path / "out" / "labelled" / "metrics.json").is_file()
    assert list((tmp_path / "out" / "labelled" / "figures").glob("*.png"))


def modules_outside_the_base_install() -> set[str]:
    """Top-level modules of the installed distributions that the base install would not bring."""
    project = project_table()
    needed = {project["name"], "pip", "setuptools"}  # a fresh venv has pip and setuptools
    todo = list(requirement_names(project["dependencies"]))
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        requires = importlib.metadata.distribution(name).requires or []
        todo += [str(r.name).lower() for r in map(Requirement, requires)
                 if r.marker is None or r.marker.evaluate({"extra": ""})]
    normalized = {re.sub(r"[-_.]+", "-", name).lower() for name in needed}
    return {module for module, distributions in importlib.metadata.packages_distributions().items()
            if not {re.sub(r"[-_.]+", "-", d).lower() for d in distributions} & normalized}


def mean_colour_onnx(path: Path, crop_size: int = 160) -> Path:
    """A classifier as dfdetect export writes one: crops (N, size, size, 3) -> (N, 1) P(FAKE), here of the mean colour."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["crops", "axes"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "scale"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"]),
             helper.make_node("Unsqueeze", ["probability", "column"], ["fake_probability"])]
    constants = [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
                 helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255]),
                 helper.make_tensor("column", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "mean_colour",
                              [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", crop_size, crop_size, 3])],
                              [helper.make_tensor_value_info("fake_probability", TensorProto.FLOAT, ["n", 1])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


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
