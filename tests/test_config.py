import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from dfhelpers import config, config_rules
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


def test_unknown_key_names_the_key_and_the_file_and_suggests_the_closest_key(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'train.epoch'; did you mean 'train.epochs'\? "
                                          r"known keys here: .*epochs"):
        config.load(path)


@pytest.mark.parametrize("section, message", [
    ("faces:\n  frames_per_video: many\n", r"key 'faces.frames_per_video' must be an integer, got 'many'"),
    ("split:\n  balance: sometimes\n", "must be one of 'per_group', 'global', 'none'"),  # the choices listed
    ("score:\n  trim: 5\n  min_faces: 10\n", r"score.min_faces is 10, score.trim is 5; a trimmed mean needs more"),
    ("faces:\n  crop_size: 24\n", r"faces.margin is 50, faces.crop_size is 24; the margin must be smaller"),
    ("faces:\n  margin: 0\ntrain:\n  framing: face\n", r"train.framing is 'face', faces.margin is 0; framings 'face' and 'padded_face'"),
    ("split:\n  val_fraction: 0\n", r"split.val_fraction is 0.0, train.calibration is 'temperature'; without val"),
], ids=["wrong type", "unknown choice", "too few faces to trim", "margin as large as the crop", "face framing, no margin",
        "temperature without val"])
def test_a_setting_of_the_wrong_type_choice_or_relation_is_refused_naming_it(tmp_path, section, message):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\n" + section)
    with pytest.raises(ConfigError, match=message):
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


@pytest.mark.parametrize("name", ["sample.yaml", "dfdc.yaml", "original.yaml"])
def test_shipped_configs_load_with_no_folder_inside_configs(name):
    # paths resolve against configs/: one written from the project root (runs/x, not ../runs/x) would
    # put a run, or look for videos, under configs/, which git tracks
    cfg = config.load(PROJECT / "configs" / name)
    paths = [cfg.work_dir, *cfg.data_dirs, *cfg.test_dirs, *filter(None, [cfg.metadata.persons_csv])]
    assert cfg.data_dirs and not [path for path in paths if Path(path).is_relative_to(PROJECT / "configs")]


# keys of dfdc.yaml's train section that describe its run, not the recipe: the model's name, the memory of a
# bigger machine, and skipping bad crops in a day-long run
DFDC_RUN_KEYS = {"model_name", "cache_max_mb", "on_bad_crop"}

# configs/original.yaml: the 2020 workflow's choices, wherever the defaults differ from them
ORIGINAL_CHOICES = {
    "faces.sampling": "all", "faces.detect_size": 1920, "faces.detect_every": 1, "faces.thresholds": [0.9, 0.9, 0.9],
    "faces.min_face_prob": 0.9, "split.frame_level_val": True,
    "train.fakes": "given", "train.calibration": "none", "train.backbone": "small_cnn", "train.weights": None,
    "train.head": "flatten", "train.epochs": 30, "train.learning_rate": 1.0e-4, "train.lr_schedule": "constant",
    "train.warmup_epochs": 0, "train.monitor": "val_loss", "train.rotation": 0.75, "train.shift": 0.2,
    "train.vertical_flip": True, "score.per_track": "all", "score.clip_exact_only": True,
}


def test_a_config_without_a_train_section_trains_the_dfdc_recipe(tmp_path):
    recipe = yaml.safe_load((PROJECT / "configs" / "dfdc.yaml").read_text())["train"]
    defaults = config.to_dict(config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\n")))["train"]
    recipe_keys = sorted(set(recipe) - DFDC_RUN_KEYS)
    assert "backbone" in recipe_keys and "vertical_flip" in recipe_keys
    assert {key: defaults[key] for key in recipe_keys} == {key: recipe[key] for key in recipe_keys}


def test_original_yaml_differs_from_the_defaults_exactly_in_the_original_choices(tmp_path):
    original = _stage_keys(config.load(PROJECT / "configs" / "original.yaml"))
    defaults = _stage_keys(config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\n")))
    assert {key: value for key, value in original.items() if value != defaults[key]} == ORIGINAL_CHOICES


def test_to_dict_round_trips_through_from_dict(tmp_path):
    cfg = config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\ntrain:\n  epochs: 4\n"))
    plain = config.to_dict(cfg)
    plain.pop("source")
    again = config.from_dict(plain, base_dir=tmp_path)
    assert again.train == cfg.train and again.work_dir == cfg.work_dir


# --- ranges, relations and names (dfhelpers.config_rules) --------------------------------------------


@pytest.mark.parametrize("section, key, value, shown", [
    ("score", "threshold", "7", "7"),  # 7.0: the float the key holds
    ("score", "clip", "[0.9, 0.1]", "[0.9, 0.1]"),
    ("faces", "frames_per_video", "-3", "-3"),
    ("train", "epochs", "0", "0"),
])
def test_value_out_of_range_is_a_one_line_error_naming_file_key_and_value(tmp_path, section, key, value, shown):
    path = write(tmp_path, f"work_dir: w\ndata_dirs: [d]\n{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"run.yaml: {section}\.{key} is {re.escape(shown)}") as error:
        config.load(path)
    assert "\n" not in str(error.value)


def test_out_of_range_error_says_the_allowed_values_and_the_default(tmp_path):
    path = write(tmp_path, "work_dir: w\ndata_dirs: [d]\nscore:\n  threshold: 7\n")
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\] .*; set a value in \[0, 1\] \(default 0.5\)"):
        config.load(path)


def test_out_of_range_override_is_refused_like_a_file_value(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: faces.margin is -1, must be >= 0"):
        config.load(write(tmp_path, "work_dir: w\ndata_dirs: [d]\n"), {"faces.margin": -1})


def test_val_and_test_fractions_in_effect_must_leave_train_groups(tmp_path):
    fractions = "work_dir: w\ndata_dirs: [d]\nsplit:\n  val_fraction: 0.5\n  test_fraction: 0.5\n"
    with pytest.raises(ConfigError, match=r"split.val_fraction is 0.5, split.test_fraction is 0.5; "
                                          r"their sum must be below 1") as error:
        config.load(write(tmp_path, fractions))
    assert "\n" not in str(error.value)
    assert config.load(write(tmp_path, fractions + "  test_groups: [person_a]\n")).split.test_fraction == 0.5


def test_a_section_built_in_code_still_refuses_its_checked_key():
    with pytest.raises(ConfigError, match=r"SampleConfig: sample.blend_strength is 0.0, must be > 0"):
        config.SampleConfig(blend_strength=0.0)


def test_every_numeric_key_has_a_range_and_every_range_names_one():
    numeric = {f"{name}.{key}" for name, section in typing.get_type_hints(config.Config).items()
               if dataclasses.is_dataclass(section)
               for key, hint in typing.get_type_hints(section).items() if _is_numeric(hint)}
    assert sorted(numeric - set(config_rules.RANGES)) == [], "add these keys to config_rules.RANGES"
    assert sorted(set(config_rules.RANGES) - numeric) == [], "these rules name no numeric key"


@pytest.mark.parametrize("path", sorted((PROJECT / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_loads_within_every_range_and_relation(path, recwarn):
    config.load(path)
    assert [str(warning.message) for warning in recwarn] == []


def _stage_keys(cfg: config.Config) -> dict[str, object]:
    """Every stage key's value by dotted name, but the model's name (the run's paths are not stage keys)."""
    sections = {name: keys for name, keys in config.to_dict(cfg).items() if isinstance(keys, dict)}
    return {f"{name}.{key}": value for name, keys in sections.items() for key, value in keys.items()
            if f"{name}.{key}" != "train.model_name"}


def _is_numeric(hint: object) -> bool:
    """int or float, optional or not, or a tuple of them."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None) and arg is not Ellipsis]
    if hint in (int, float):
        return True
    return bool(args) and typing.get_origin(hint) is not typing.Literal and all(_is_numeric(arg) for arg in args)
