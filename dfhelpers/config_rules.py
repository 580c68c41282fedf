"""The run configuration's allowed values: each number's range, the relations between keys, key names."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dfhelpers.errors import ConfigError

Sections = Mapping[str, Mapping[str, Any]]  # section name -> key -> value (every key: defaults filled in)
Get = Callable[[str], Any]  # dotted key ("score.clip") -> its value


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of one numeric key, or of each number of a list key; None: no bound on that side."""

    low: float | None = None
    high: float | None = None
    reason: str = ""  # what the number means, so the bounds make sense
    fix: str = ""  # what to set instead; "": "set a value <bounds> (default ...)"
    low_open: bool = False  # True: the low bound itself is refused
    high_open: bool = False

    def admits(self, number: float) -> bool:
        """Whether a finite number lies within the bounds (NaN and infinities never do)."""
        if not math.isfinite(number):
            return False
        is_above = self.low is None or (number > self.low if self.low_open else number >= self.low)
        is_below = self.high is None or (number < self.high if self.high_open else number <= self.high)
        return is_above and is_below

    def describe(self) -> str:
        """The bounds as a reader writes them: '>= 1', '> 0', 'in [0, 1)'."""
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {opening}{_show(self.low)}, {_show(self.high)}{closing}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_show(self.low)}"
        return f"{'<' if self.high_open else '<='} {_show(self.high)}"


@dataclasses.dataclass(frozen=True)
class Relation:
    """A rule tying keys together, checked once every key is within its own range."""

    keys: tuple[str, ...]  # named with their values in the message
    holds: Callable[[Get], bool]
    requirement: str  # what must hold and why, in words
    fix: str
    applies: Callable[[Get], bool] = lambda get: True  # e.g. only for one aggregation


def _at_least(low: float, reason: str, fix: str = "") -> Range:
    return Range(low=low, reason=reason, fix=fix)


def _above(low: float, reason: str, fix: str = "") -> Range:
    return Range(low=low, low_open=True, reason=reason, fix=fix)


def _unit(reason: str, high_open: bool = False) -> Range:
    """Probabilities, shares and fractions: [0, 1], or [0, 1) when 1 would leave nothing."""
    return Range(low=0, high=1, reason=reason, high_open=high_open)


_SEED = _at_least(0, "numpy's generators take seeds >= 0")
_WORKERS = _at_least(1, "processes; 1 runs in this process")
_BATCH = _at_least(1, "items per call")

# --- every numeric key of every section ------------------------------------------------------------------
RANGES: dict[str, Range] = {
    "sample.seed": _SEED,
    "sample.n_identities": _at_least(1, "identities generated; 0 would silently mean all",
                                     "set 1 or more, or null for all"),
    "sample.n_test_identities": _at_least(0, "identities held out in test_dir; 0 holds none out"),
    "sample.videos_per_identity": _at_least(1, "REAL videos per identity"),
    "sample.fakes_per_real": _at_least(0, "FAKEs per REAL video; 0: REAL videos only (for train.fakes: self_blend)"),
    "sample.max_videos": _at_least(1, "a cap on the number of videos; 0 would silently mean no cap"),
    "sample.width": _at_least(1, "frame width in pixels"),
    "sample.height": _at_least(1, "frame height in pixels"),
    "sample.fps": _at_least(1, "frames per second"),
    "sample.seconds": _above(0, "clip length"),
    "sample.face_height": Range(0, 1, "face box height as a share of the frame height", low_open=True),
    "sample.noise": _at_least(0, "sensor-noise sigma in grey levels"),
    "sample.crf": Range(0, 51, "x264's quality scale: 0 lossless .. 51 worst"),
    "sample.gop": _at_least(1, "keyframe interval in frames"),
    "sample.double_compression": _unit("share of videos encoded twice"),
    "sample.mask_softness": _above(0, "blend-mask edge sigma in eye distances"),
    "sample.colour_mismatch": _unit("brightness step as a fraction of 255"),
    "sample.resolution_mismatch": Range(0, 1, "the inserted face's scale before upsampling; 1 keeps it",
                                        low_open=True),
    "sample.warp": _unit("relative scale change and shift of the pasted copy"),
    "sample.subtle_fraction": _unit("share of FAKEs with scaled-down artefacts"),
    "sample.blend_strength": _above(0, "0 would make the FAKEs equal their REAL videos",
                                    "set it above 0 (0.3 gives subtle fakes)"),
    "sample.workers": _WORKERS,
    "faces.frames_per_video": _at_least(1, "frames sampled per video; 0 would find no face"),
    "faces.every_k": _at_least(1, "sampling every k-th frame"),
    "faces.detect_size": _at_least(1, "longest side of MTCNN's copy in pixels"),
    "faces.thresholds": _unit("MTCNN's P/R/O-net score thresholds are probabilities"),
    "faces.min_face_size": _at_least(1, "pixels on the detection copy"),
    "faces.min_face_prob": _unit("MTCNN's face probability"),
    "faces.margin": _at_least(0, "pixels around the face in the crop"),
    "faces.crop_size": _at_least(1, "crop side in pixels"),
    "faces.batch_size": _BATCH,
    "faces.max_faces_per_frame": _at_least(1, "faces kept per frame",
                                           "set 1 or more, or null to keep every face"),
    "faces.track_max_shift": _above(0, "face widths a face may move between sampled frames; 0 links none"),
    "faces.jpeg_quality": Range(1, 100, "OpenCV's JPEG quality scale"),
    "faces.detect_every": _at_least(1, "every k-th sampled frame is detected in full",
                                    "set 1 to detect every sampled frame in full, or k > 1 to detect every k-th "
                                    "and follow the faces between"),
    "faces.workers": _WORKERS,
    "faces.detector_threads": _at_least(1, "MTCNN's threads per worker"),
    "split.val_fraction": _unit("a share of the groups; 0 holds none out", high_open=True),
    "split.test_fraction": _unit("a share of the groups; 0 holds none out", high_open=True),
    "split.frame_level_val_fraction": _unit("a share of each train group's crops", high_open=True),
    "split.max_crops_per_video": _at_least(1, "crops kept per video", "set 1 or more, or null to keep all"),
    "split.seed": _SEED,
    "train.min_temperature": _above(0, "the calibration temperature divides the logit"),
    "train.image_size": _at_least(1, "model input side in pixels"),
    "train.srm_truncation": _above(0, "SRM residuals are clipped to +-T grey levels"),
    "train.cnn_filters": _at_least(1, "filters per convolution block"),
    "train.dense_units": _at_least(1, "units of the head's hidden layer"),
    "train.dropout": _unit("Keras' dropout rate; 1 would drop every unit", high_open=True),
    "train.batch_size": _BATCH,
    "train.epochs": _at_least(0, "passes over the training crops; 0 only calibrates train.init"),
    "train.learning_rate": _above(0, "the optimiser's step; 0 learns nothing"),
    "train.weight_decay": _at_least(0, "AdamW's decay; 0 is none"),
    "train.warmup_epochs": _at_least(0, "cosine warm-up epochs; 0 is none"),
    "train.patience": _at_least(0, "epochs without a better monitor value before stopping"),
    "train.backup_steps": _at_least(1, "steps between mid-epoch weight backups; null backs up once per epoch"),
    "train.rotation": _unit("a fraction of a full turn; 0 is off"),
    "train.shift": _unit("a fraction of the crop side; 0 is off"),
    "train.sharpness": Range(0, 0.5, "blur..sharpen strength: 0.5 already spans full blur; 0 is off"),
    "train.brightness": _unit("a fraction of the pixel range; 0 is off"),
    "train.contrast": _unit("a fraction; 0 is off"),
    "train.unbalanced_ratio": _at_least(1, "the larger class's count over the smaller's"),
    "train.cache_max_mb": _at_least(0, "MB of decoded crops kept in memory; 0 streams from disk"),
    "train.seed": _SEED,
    "score.trim": _at_least(0, "face scores dropped at each end; 0 drops none"),
    "score.min_faces": _at_least(1, "fewer faces get the prior; 1 scores any video with a face"),
    "score.prior": _unit("a video score is a probability of FAKE"),
    "score.clip": _unit("the bounds of a video score, a probability of FAKE"),
    "score.threshold": _unit("FAKE when score >= threshold, and scores are probabilities"),
    "score.confident_fake": _unit("a face score, a probability"),
    "score.confident_share": _unit("a share of the faces"),
    "score.confident_real": _unit("a face score, a probability"),
    "score.confident_real_share": _unit("a share of the faces"),
    "score.batch_size": _BATCH,
    "score.threads": _at_least(1, "videos decoded and detected at once"),
    "score.n_timelines": _at_least(0, "videos plotted; 0 plots none"),
    "score.bootstrap": _at_least(0, "resamples per interval; 0 computes no intervals"),
    "score.bootstrap_seed": _SEED,
    "score.confidence": Range(0, 1, "an interval's coverage", low_open=True, high_open=True),
    "score.n_explained": _at_least(0, "videos explained; 0 explains none"),
}


def _ordered(key: str, reason: str) -> Relation:
    """A [low, high] range key: low must not exceed high."""
    return Relation((key,), lambda get: get(key)[0] <= get(key)[1],
                    f"its first number must not exceed its second ({reason})", "write it as [low, high]")


def holds_val(val_fraction: float, val_groups: list, frame_level_val: bool) -> bool:
    """Whether notebook 03 holds val groups (or frames) out; without, every group outside test trains."""
    return bool(val_fraction or val_groups or frame_level_val)


def _held_out(get: Get, part: str) -> float:
    """The effective fraction of groups held out for val or test: listed groups replace the fraction."""
    return 0.0 if get(f"split.{part}_groups") else get(f"split.{part}_fraction")


RELATIONS: tuple[Relation, ...] = (
    _ordered("sample.face_height", "a range of face heights"),
    _ordered("sample.noise", "a range of noise sigmas"),
    _ordered("sample.crf", "a range of x264 qualities"),
    _ordered("sample.gop", "a range of keyframe intervals"),
    _ordered("sample.resolution_mismatch", "a range of scales"),
    Relation(("score.clip",), lambda get: get("score.clip")[0] < get("score.clip")[1],
             "its low bound must be below its high bound (video scores are clipped into [low, high])",
             "write it as [low, high], e.g. [0.01, 0.99]"),
    Relation(("split.val_fraction", "split.test_fraction"),
             lambda get: _held_out(get, "val") + _held_out(get, "test") < 1,
             "their sum must be below 1 (the rest of the groups is the train split)",
             "lower one of them, e.g. 0.15 each"),
    Relation(("split.val_fraction", "train.calibration"), lambda get: get("train.calibration") == "none",
             "without val groups there is nothing to fit the temperature on (the last epoch is kept)",
             "set train.calibration: none, or a split.val_fraction above 0",
             applies=lambda get: get("train.epochs") > 0 and not holds_val(
                 get("split.val_fraction"), get("split.val_groups"), get("split.frame_level_val"))),
    Relation(("faces.min_face_size", "faces.detect_size"),
             lambda get: get("faces.min_face_size") <= get("faces.detect_size"),
             "the smallest face must fit on the detection copy", "lower faces.min_face_size (MTCNN's default: 20)"),
    Relation(("score.confident_real", "score.confident_fake"),
             lambda get: get("score.confident_real") < get("score.confident_fake"),
             "the 'confident' rule needs confident_real below confident_fake",
             "set e.g. confident_real 0.2 and confident_fake 0.8",
             applies=lambda get: get("score.aggregation") == "confident"),
    Relation(("train.warmup_epochs", "train.epochs"),
             lambda get: get("train.warmup_epochs") <= get("train.epochs"),
             "the cosine schedule's warm-up must fit in the run", "lower train.warmup_epochs (1 is usual)",
             applies=lambda get: get("train.lr_schedule") == "cosine" and get("train.epochs") > 0),
    Relation(("train.epochs", "train.init"), lambda get: bool(get("train.init")),
             "0 epochs trains nothing, so only a trained classifier can be calibrated",
             "set train.init to a trained .keras file, or train.epochs to 1 or more",
             applies=lambda get: get("train.epochs") == 0),
    Relation(("faces.margin", "faces.crop_size"), lambda get: get("faces.margin") < get("faces.crop_size"),
             "the margin must be smaller than the crop (crop_face divides by crop_size - margin)",
             "lower faces.margin or raise faces.crop_size (the defaults: 50 and 160)"),
    Relation(("train.framing", "faces.margin"), lambda get: get("faces.margin") > 0,
             "framings 'face' and 'padded_face' replace the margin and there is none",
             "set faces.margin (default 50) or framing: margin",
             applies=lambda get: get("train.framing") in ("face", "padded_face")),
    Relation(("score.min_faces", "score.trim"), lambda get: get("score.min_faces") > 2 * get("score.trim"),
             "a trimmed mean needs more than 2 x trim faces, or videos with fewer get the prior while reported ok",
             "raise score.min_faces above 2 x score.trim, lower score.trim, or use another aggregation",
             applies=lambda get: get("score.aggregation") == "trimmed_mean"),
)


def check(sections: Sections, where: str, defaults: Sections | None = None) -> None:
    """Check every ranged key of `sections`, then every relation between keys.

    Raises:
        ConfigError: one line naming `where`, the key, its value, the allowed values and the fix.
    """
    for key, rule in RANGES.items():
        section, _, name = key.partition(".")
        if name in sections.get(section, {}):
            default = (defaults or {}).get(section, {}).get(name, _NO_DEFAULT)
            _check_range(key, sections[section][name], rule, where, default)

    def get(key: str) -> Any:
        section, _, name = key.partition(".")
        return sections[section][name]

    for relation in RELATIONS:
        if relation.applies(get) and not relation.holds(get):
            shown = ", ".join(f"{key} is {_show(get(key))}" for key in relation.keys)
            raise ConfigError(f"{where}: {shown}; {relation.requirement}; {relation.fix}")


def check_key(key: str, value: Any, where: str) -> None:
    """Check one key against its range alone (a section's __post_init__ uses it)."""
    _check_range(key, value, RANGES[key], where, _NO_DEFAULT)


def unknown_key(where: str, prefix: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a key no section has, with the closest known key when one is close."""
    names = sorted(known)
    closest = difflib.get_close_matches(name, names, n=1, cutoff=0.75)  # difflib's 0.6 offers epochs for epoch_sampling
    suggestion = f"did you mean '{prefix}{closest[0]}'? " if closest else ""
    return ConfigError(f"{where}: unknown key '{prefix}{name}'; {suggestion}known keys here: {', '.join(names)}")


# --- private helpers -----------------------------------------------------------------------------------

_NO_DEFAULT = object()


def _check_range(key: str, value: Any, rule: Range, where: str, default: Any) -> None:
    if value is None:  # an optional key's null: its type allowed it, and it means "no limit"
        return
    is_list = isinstance(value, (list, tuple))
    numbers = list(value) if is_list else [value]
    if all(rule.admits(float(number)) for number in numbers):
        return
    each = "each number " if is_list else ""
    if rule.fix:
        fix = rule.fix
    elif default is _NO_DEFAULT:
        fix = f"set {each or 'a value '}{rule.describe()}"
    else:
        fix = f"set {each or 'a value '}{rule.describe()} (default {_show(default)})"
    raise ConfigError(f"{where}: {key} is {_show(value)}, {each}must be {rule.describe()} ({rule.reason}); {fix}")


def _show(value: Any) -> str:
    """A value as YAML spells it: lists in brackets, null for None."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return "null" if value is None else repr(value)
