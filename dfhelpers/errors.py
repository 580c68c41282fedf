"""Typed exceptions: every message is one line naming the input and what to do."""

from __future__ import annotations


class DfdetectError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DfdetectError):
    """A configuration file or override is malformed."""


class MetadataError(DfdetectError):
    """A DFDC metadata.json (or persons CSV) is malformed or inconsistent."""


class SampleSourceError(DfdetectError):
    """A face photo or video the sample generator needs is not installed."""


class VideoReadError(DfdetectError):
    """A video (or a face image) cannot be opened or decoded; `reason` is the short cause a status reports."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class CropError(DfdetectError):
    """A face crop file is missing or corrupt."""


class SplitError(DfdetectError):
    """The balance/split stage cannot satisfy the configuration."""


class LeakageError(SplitError):
    """A group, video or original appears in more than one split."""


class MissingWeightsError(DfdetectError):
    """Pretrained weights are not available (offline, or not downloaded)."""


class ModelLoadError(DfdetectError):
    """A saved model file is missing or cannot be loaded."""


class StageOutputMissing(DfdetectError):
    """A stage needs the output of an earlier stage that has not run."""
