from pathlib import Path

import pytest

from dfhelpers import config
from dfhelpers.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch):
    monkeypatch.delenv(config.ENV_OVERRIDES, raising=False)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    cfg = config.load(write(tmp_path, "work_dir: runs/x\ndata_dirs: [data/p0]\ntest_dir: data/test\n"))
    assert cfg.work_dir == tmp_path / "runs" / "x"
    assert cfg.data_dirs == (tmp_path / "data" / "p0",)
    assert cfg.split_csv == tmp_path / "runs" / "x" / "manifests" / "split.csv"


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'train.epoch'; known keys here: .*epochs"):
        config.load(path)


def test_wrong_type_names_the_key_and_the_expected_type(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\nfaces:\n  frames_per_video: many\n")
    with pytest.raises(ConfigError, match=r"key 'faces.frames_per_video' must be an integer, got 'many'"):
        config.load(path)


def test_literal_choices_are_listed_in_the_error(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\nsplit:\n  balance: sometimes\n")
    with pytest.raises(ConfigError, match="must be one of 'per_group', 'global', 'none'"):
        config.load(path)


def test_missing_required_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="required key 'data_dirs' is missing"):
        config.load(write(tmp_path, "work_dir: w\n"))


def test_invalid_yaml_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        config.load(write(tmp_path, "work_dir: [unclosed\n"))
    assert "\n" not in str(err.value)


def test_overrides_accept_dotted_keys_and_nested_dicts(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\n")
    cfg = config.load(path, {"train.epochs": 3, "faces": {"margin": 20}, "train.learning_rate": "1e-3"})
    assert (cfg.train.epochs, cfg.faces.margin, cfg.train.learning_rate) == (3, 20, 0.001)


def test_environment_overrides_apply_before_explicit_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_OVERRIDES, '{"train.epochs": 2, "work_dir": "elsewhere"}')
    cfg = config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\n"), {"train.epochs": 5})
    assert cfg.train.epochs == 5 and cfg.work_dir == tmp_path / "elsewhere"


def test_config_is_frozen(tmp_path):
    cfg = config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\n"))
    with pytest.raises(AttributeError):
        cfg.train.epochs = 1


@pytest.mark.parametrize("name", ["sample.yaml", "dfdc.yaml"])
def test_shipped_configs_load_with_no_folder_inside_configs(name):
    # paths resolve against configs/: one written from the project root (runs/x, not ../runs/x) would
    # put a run, or look for videos, under configs/, which git tracks
    cfg = config.load(PROJECT / "configs" / name)
    paths = [cfg.work_dir, *cfg.data_dirs, *cfg.test_dirs, *filter(None, [cfg.metadata.persons_csv])]
    assert cfg.data_dirs and not [path for path in paths if Path(path).is_relative_to(PROJECT / "configs")]


def test_to_dict_round_trips_through_from_dict(tmp_path):
    cfg = config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\ntrain:\n  epochs: 4\n"))
    plain = config.to_dict(cfg)
    plain.pop("source")
    again = config.from_dict(plain, base_dir=tmp_path)
    assert again.train == cfg.train and again.work_dir == cfg.work_dir
