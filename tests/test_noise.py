"""A user sees only what they can act on: no TensorFlow C++ start-up lines, no FFmpeg line about a
video whose row already says why it failed, no kernel-transport warning, no text-progress flood,
in run_all.py's output, the executed notebooks or dfdetect's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat

import hostile
from videos import save_tiny_model, write_video

PROJECT = Path(__file__).resolve().parents[1]

# What TensorFlow 2.21 prints on a CPU machine (absl "I0000 00:00:..." lines, oneDNN, CUDA
# probing, CPU flags), the kernel's TCP warning and tqdm's "no widgets" warning.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d|oneDNN|cuda|cuInit|TensorFlow binary is optimized|absl::"
                   r"|without encryption|IProgress not found", re.IGNORECASE | re.MULTILINE)

NOTEBOOK_CELL = """
import dfhelpers
import tensorflow as tf
import torchvision
from tqdm.auto import tqdm
total = 0
for i in tqdm(range(2000), desc="work"):
    total += int(tf.reduce_sum(tf.ones((2, 2))))
print("total", total)
"""


def noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


def output_text(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    return "\n".join(str(v) for v in output.get("data", {}).values() if isinstance(v, str))


def test_run_all_and_its_kernels_print_no_start_up_noise_and_one_line_per_progress_bar(tmp_path, write_notebook):
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: [data]\n")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_tf.ipynb", NOTEBOOK_CELL)
    result = subprocess.run([sys.executable, str(PROJECT / "run_all.py"), "--config", str(tmp_path / "run.yaml"),
                             "--notebooks", str(notebooks)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert noise_in(result.stdout + result.stderr) == []
    assert result.stderr == ""
    cell = nbformat.read(tmp_path / "run" / "executed" / "01_tf.ipynb", as_version=4).cells[-1]
    texts = [output_text(output) for output in cell.outputs]
    assert noise_in("\n".join(texts)) == []
    assert "total 8000" in "\n".join(texts)
    progress_lines = [line for text in texts for line in re.split(r"[\r\n]", text) if "work:" in line]
    assert len(progress_lines) == 1, progress_lines  # one widget, not 2000 updates


def test_dfdetect_prints_one_error_line_and_no_start_up_noise(tmp_path):
    video = write_video(tmp_path / "clip.mp4", hostile.background_frames(4, 64, 48))
    model = tmp_path / "broken.keras"
    model.write_bytes(b"not a model")
    command = [str(Path(sys.executable).with_name("dfdetect")), "predict", str(video), "--model", str(model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert noise_in(result.stdout + result.stderr) == []
    assert len(result.stderr.strip().splitlines()) == 1 and str(model) in result.stderr


def test_tensorflow_imported_by_dfhelpers_is_quiet_keeps_other_stderr_and_the_environment(tmp_path):
    code = ("import json, os, dfhelpers\n"
            "from dfhelpers import inputs  # imports TensorFlow, as a notebook's first cell does\n"
            "import tensorflow as tf\n"
            "tf.constant(1) + 1  # the first op: 'failed call to cuInit' unless TensorFlow's level is 3\n"
            "with dfhelpers.compat.native_stderr_filtered():  # as during TensorFlow's import\n"
            "    os.write(2, b'I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\\n')\n"
            "    os.write(2, b'a line of our own\\n')\n"
            "print(json.dumps(os.environ.get('TF_CPP_MIN_LOG_LEVEL')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert noise_in(result.stderr) == []
    assert result.stderr.splitlines() == ["a line of our own"]
    assert json.loads(result.stdout) is None  # TensorFlow read its level while loading; nothing else sees it


def test_dfdetect_reports_a_truncated_video_in_its_row_and_nothing_from_ffmpeg_on_stderr(tmp_path):
    video = write_video(tmp_path / "clip.mp4", hostile.background_frames(8, 64, 48))
    truncated = hostile.truncated_copy(video, tmp_path / "truncated.mp4")  # no index: OpenCV's FFmpeg logs why
    model = save_tiny_model(tmp_path / "tiny.keras")
    command = [str(Path(sys.executable).with_name("dfdetect")), "predict", str(truncated), "--model", str(model),
               "--json", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["status"].startswith("unreadable: cannot open")
    assert [line for line in result.stderr.splitlines() if "dfdetect export" not in line] == []
