"""Notebooks 01-03 on a face-image set: items per second of each stage and the peak memory of the run.

Takes a face-image folder (Kaggle's deepfake-faces layout, or any folder with labels.csv) and
runs the three stages as the notebooks do (metadata.read_videos, faces.run_stage on the local
process pool, splitting.build_split) on --limit of its items, whole families, in a temporary run
folder; a copy of the labels file points at the folder's images, which are only read. Prints
each stage's seconds and items per second, the time the whole set would take at that rate,
and the peak resident memory of this process and its pool workers together (sampled every
0.2 s).

    python benchmarks/bench_ingest.py DEEPFAKE_FACES --config configs/deepfake_faces.yaml --limit 4000 \\
        --out benchmarks/results/ingest_deepfake_faces.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script
import _common  # noqa: E402

from dfhelpers import config, faces, imagesets, metadata, splitting  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    machine = _common.machine()
    _common.print_machine(machine)
    folder = Path(args.folder).resolve()
    n_items = len(metadata.read_part(folder, lenient=True))
    with tempfile.TemporaryDirectory(prefix="dfdetect-ingest-") as scratch, _common.PeakMemory() as memory:
        subset = subset_folder(folder, Path(scratch) / folder.name, args.limit)
        cfg = config.load(args.config, {"work_dir": str(Path(scratch) / "run"), "data_dirs": [str(subset)],
                                        "test_dir": None})
        seconds = {}
        started = time.perf_counter()
        items = metadata.read_videos(cfg.data_dirs)
        seconds["01_list"] = time.perf_counter() - started
        started = time.perf_counter()
        statuses = faces.run_stage(cfg, items)
        seconds["02_faces"] = time.perf_counter() - started
        started = time.perf_counter()
        split = splitting.build_split(items, faces.load_crops(cfg), cfg.split, fakes=cfg.train.fakes)
        splitting.write_split(split, cfg.split_csv)
        seconds["03_split"] = time.perf_counter() - started
    total = sum(seconds.values())
    summary = {"benchmark": "bench_ingest", "folder": str(args.folder), "items": len(items),
               "items_in_folder": n_items, "faces_found": int(statuses["n_faces"].gt(0).sum()),
               "stage_s": {name: round(value, 1) for name, value in seconds.items()},
               "items_per_s": round(len(items) / total, 1),
               "whole_folder_s_at_this_rate": round(n_items / (len(items) / total), 1),
               "peak_rss_mb": memory.peak_mb, "workers": cfg.faces.workers,
               "machine": _common.finish_machine(machine)}
    print(f"{len(items)} items: " + ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
          + f"; {summary['items_per_s']} items/s, the whole folder ({n_items}) in "
            f"{summary['whole_folder_s_at_this_rate'] / 60:.1f} min at this rate; peak memory {memory.peak_mb} MB")
    _common.write_result(summary, args.out)
    return 0


def subset_folder(folder: Path, target: Path, limit: int) -> Path:
    """A labels file of `folder`'s first families adding up to about `limit` items, its images linked, not copied."""
    target.mkdir(parents=True)
    for name in metadata.SOURCES:
        if (folder / name).is_file():
            labels = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
            break
    else:
        raise SystemExit(f"{folder}: no labels file ({', '.join(metadata.SOURCES)})")
    if name == metadata.METADATA_NAME:
        raise SystemExit(f"{folder}: a folder of videos; this benchmark measures face-image sets")
    key = "videoname" if name == imagesets.KAGGLE_CSV else ("video" if "video" in labels else "image")
    family = labels[key]
    if "original" in labels:  # a FAKE's family is its original; a REAL is its own
        family = labels["original"].where(labels["original"] != "", labels[key])
    kept = family.isin(family.drop_duplicates().iloc[:_families_for(family, limit)])
    labels[kept].to_csv(target / name, index=False)
    for entry in folder.iterdir():  # the images (faces_224/, labels.csv's folders and files), read through links
        if entry.name != name:
            (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target


def _families_for(family: pd.Series, limit: int) -> int:
    """How many of the first families hold about `limit` items."""
    sizes = family.value_counts(sort=False).reindex(family.drop_duplicates()).cumsum()
    return max(1, int((sizes <= limit).sum()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a face-image folder (metadata.csv beside faces_224/, or labels.csv)")
    parser.add_argument("--config", required=True, help="the run config whose faces and split settings to use")
    parser.add_argument("--limit", type=int, default=4000, help="items to run, whole families (default 4000)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/...)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
