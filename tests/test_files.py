import json
import os
import stat

import pandas as pd
import pytest

from dfhelpers import files


def test_atomic_path_leaves_no_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = files.write_json({"v": 1}, tmp_path / "m.json")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("{")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{\n")


def test_written_files_get_the_usual_permissions(tmp_path):
    path = files.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_temporary_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with files.atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.keras").read_bytes() == b"x"


def test_write_json_writes_a_figure_that_could_not_be_computed_as_null(tmp_path):
    path = files.write_json({"auc": float("nan"), "per_method": [{"auc": float("inf")}, {"auc": 0.5}]},
                            tmp_path / "metrics.json")
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert json.loads(path.read_text()) == {"auc": None, "per_method": [{"auc": None}, {"auc": 0.5}]}
