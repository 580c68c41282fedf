"""dfhelpers.sample: the generated DFDC-shaped sample (metadata, identities, no shortcut cues, MTCNN)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from dfhelpers import config, sample
from dfhelpers.config import SampleConfig
from dfhelpers.errors import ConfigError, SampleSourceError
from dfhelpers.sample.encoding import mp4_writer

# A quick sample: one REAL shot of six identities (photos and both clips), 1 s long, in-process.
QUICK = SampleConfig(enabled=True, n_identities=6, n_test_identities=1, videos_per_identity=1, seconds=1.0, workers=1)
KILLED = 75  # the exit status of a sample generation stopped on purpose

# ensure(config from argv) in a process that dies as a killed one does (no clean-up) while it writes its
# second shot's videos, the first shot's done: an interruption mid-way, at the same point every time
DIES_IN_THE_SECOND_SHOT = f"""
import json, os, sys
from pathlib import Path
from dfhelpers import config
from dfhelpers.sample import generation

render_shot, shots = generation.render_shot, []

def render_until_killed(*args, **kwargs):
    shots.append(args[0])
    for n_rendered, rendered in enumerate(render_shot(*args, **kwargs)):
        if len(shots) == 2 and n_rendered == 2:
            os._exit({KILLED})
        yield rendered

generation.render_shot = render_until_killed
generation.ensure(config.from_dict(json.loads(sys.argv[1]), base_dir=Path(sys.argv[2])))
"""


def _metadata(out_dir: Path) -> dict[str, dict]:
    return {folder.name: json.loads((folder / "metadata.json").read_text())
            for folder in sorted(out_dir.iterdir()) if folder.is_dir()}


def _frame_hashes(path: Path) -> list[str]:
    """Hashes of the decoded YUV planes: no colour conversion between the file and the hash."""
    with av.open(str(path)) as container:
        return [hashlib.sha256(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()
                for frame in container.decode(video=0)]


def _quick_config(tmp_path: Path, **sample_settings) -> config.Config:
    raw = {"work_dir": "run", "data_dirs": ["data/dfdc_train_part_0", "data/dfdc_train_part_1"],
           "test_dir": "data/test_videos", "metadata": {"persons_csv": "data/persons.csv"},
           "sample": {**dataclasses.asdict(QUICK), **sample_settings}}
    return config.from_dict(raw, base_dir=tmp_path)


def test_default_sample_writes_dfdc_metadata_for_every_video(default_sample):
    folders = _metadata(default_sample)
    assert set(folders) == {"dfdc_train_part_0", "dfdc_train_part_1", "test_videos"}
    for folder, entries in folders.items():
        assert sorted(entries) == sorted(p.name for p in (default_sample / folder).glob("*.mp4"))
        for name, entry in entries.items():
            assert re.fullmatch(r"[a-z]{10}\.mp4", name)
            assert entry["split"] == ("test" if folder == "test_videos" else "train")
            if entry["label"] == "REAL":
                assert entry["original"] is None
            else:
                assert entry["label"] == "FAKE" and entries[entry["original"]]["label"] == "REAL"


def test_video_names_are_unique_across_parts_and_test(default_sample):
    names = [name for entries in _metadata(default_sample).values() for name in entries]
    assert len(names) == len(set(names))


def test_test_identities_never_appear_in_the_train_parts(default_sample):
    persons = pd.read_csv(default_sample / "persons.csv")
    test_names = set(_metadata(default_sample)["test_videos"])
    assert set(persons["video"]) == {n for entries in _metadata(default_sample).values() for n in entries}
    test_people = set(persons.loc[persons["video"].isin(test_names), "identity"])
    train_people = set(persons.loc[~persons["video"].isin(test_names), "identity"])
    assert len(test_people) == 3 and not test_people & train_people
    videos = sample.plan(SampleConfig(enabled=True))
    train_donors = {d for donors in videos.loc[videos["folder"] != "test", "donors"] for d in donors.split(",") if d}
    assert train_donors <= train_people  # a swapped-in face is a train identity too


def test_default_sample_has_eleven_identities_in_seven_groups_and_two_fake_kinds_per_real():
    videos = sample.plan(SampleConfig(enabled=True))
    assert videos["person"].nunique() == 11 and videos["group"].nunique() == 7
    assert (videos["label"] == "REAL").sum() == 33
    assert (videos["label"] == "FAKE").sum() == 2 * (videos["label"] == "REAL").sum()
    for folder in ("part_0", "part_1", "test"):
        assert {"face_swap", "self_blend"} <= set(videos.loc[videos["folder"] == folder, "method"])


def test_train_face_swaps_paste_the_faces_of_several_donors_not_only_the_one_clip():
    videos = sample.plan(SampleConfig(enabled=True))
    swaps = videos[(videos["method"] == "face_swap") & (videos["folder"] != "test")]
    first_donors = swaps["donors"].str.split(",").str[0]
    assert first_donors.nunique() >= 4
    assert first_donors.value_counts().iloc[0] <= 0.6 * len(swaps)


def test_persons_csv_names_the_split_group_so_one_group_photo_is_one_person(default_sample):
    persons = pd.read_csv(default_sample / "persons.csv")
    group_photo = persons.loc[persons["identity"].str.startswith("group_"), "person"]
    assert len(group_photo) == 45 and set(group_photo) == {"group_photo"}
    solo = persons[~persons["identity"].str.startswith("group_")]
    assert (solo["person"] == solo["identity"]).all()


@pytest.mark.parametrize("seed", range(50))
def test_no_picture_lands_on_both_sides_of_the_split_whatever_the_seed(seed):
    videos = sample.plan(dataclasses.replace(SampleConfig(enabled=True), seed=seed))
    side_of_picture: dict[str, set[bool]] = {}
    for row in videos.itertuples():
        picture = sample.IDENTITIES[[i.name for i in sample.IDENTITIES].index(row.person)].sources[row.source].picture
        side_of_picture.setdefault(picture, set()).add(row.folder == "test")
    assert all(len(sides) == 1 for sides in side_of_picture.values())
    assert videos.groupby("group")["folder"].apply(lambda folders: folders.eq("test").nunique()).eq(1).all()


def test_crops_of_one_photograph_share_a_split_group():
    groups = sample.split_groups([sample.sources.identity("joe_biden"),
                                  sample.Identity("obama_crop", (dataclasses.replace(
                                      sample.sources.identity("joe_biden").sources[0], member="obama3.jpg"),), "x")])
    assert groups["joe_biden"] == groups["obama_crop"] == "joe_biden+obama_crop"


def test_zero_blend_strength_is_refused_with_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="blend_strength") as error:
        _quick_config(tmp_path, blend_strength=0.0)
    assert "\n" not in str(error.value)


def test_mtcnn_finds_a_face_in_nearly_every_sampled_frame_of_every_video(default_sample):
    import torch
    from facenet_pytorch import MTCNN

    # the face stage's own thresholds: at the original (0.9, 0.9, 0.9) P-net drops a clear, frontal face
    # in an odd frame after x264 (a swap in joe_biden's shot: 7 of 8 frames, all 8 at the stage's)
    faces_cfg = config.FacesConfig()
    detector = MTCNN(keep_all=True, thresholds=list(faces_cfg.thresholds), min_face_size=faces_cfg.min_face_size)
    rates = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine, more threads made this 4x slower
    try:
        for path in sorted(default_sample.glob("*/*.mp4")):
            with av.open(str(path)) as container:
                frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
            picks = np.linspace(0, len(frames) - 1, 8).round().astype(int)
            boxes, _ = detector.detect(np.stack([frames[i] for i in picks]))
            rates[path.name] = np.mean([found is not None for found in boxes])
    finally:
        torch.set_num_threads(threads)
    assert len(rates) == 99
    assert min(rates.values()) >= 0.9, {name: rate for name, rate in rates.items() if rate < 0.9}


def test_every_fake_shares_size_rate_length_and_pixel_format_with_its_original(default_sample):
    n_pairs = 0
    for folder, entries in _metadata(default_sample).items():
        for name, entry in entries.items():
            if entry["label"] == "FAKE":
                fake, real = (_stream_facts(default_sample / folder / n) for n in (name, entry["original"]))
                assert fake == real, name
                n_pairs += 1
    assert n_pairs == 66


def _stream_facts(path: Path) -> tuple:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n_frames = sum(1 for _ in container.decode(video=0))
        context = stream.codec_context
        return (context.name, context.width, context.height, str(context.pix_fmt), stream.average_rate,
                n_frames, context.color_range, context.colorspace)


@pytest.mark.parametrize("person", ["group_b", "pexels_woman", "barack_obama"])
def test_fake_frames_equal_the_original_outside_the_blend_mask(person):
    videos = sample.plan(SampleConfig(enabled=True))
    real = videos[(videos["person"] == person) & (videos["label"] == "REAL")].iloc[0]
    shot = videos[(videos["video"] == real["video"]) | (videos["original"] == real["video"])]
    assert set(shot["method"]) == {"real", "face_swap", "self_blend"}
    for rendered in sample.render_shot(shot, SampleConfig(enabled=True), n_frames=4):
        for fake, mask in zip(rendered.fakes, rendered.masks):
            outside = mask == 0
            assert np.array_equal(fake[outside], rendered.real[outside])
            inside = mask > 0.5
            # the manipulation is visible: the blended face differs clearly from the original
            assert np.abs(fake[inside].astype(int) - rendered.real[inside]).mean() > 3
            assert 0.02 < inside.mean() < 0.6


def test_every_self_blend_changes_the_colour_of_the_face_it_pastes():
    """A self-blend with no colour step differs from its REAL video by a few percent of warp only: nothing
    to learn. Each one, even a subtle one, shifts the mean colour inside its mask on some channel."""
    sample_cfg = SampleConfig(enabled=True)
    videos = sample.plan(sample_cfg)
    for real in videos[videos["label"] == "REAL"].head(12).itertuples():
        shot = videos[(videos["video"] == real.video) | (videos["original"] == real.video)]
        rendered = next(sample.render_shot(shot, sample_cfg, n_frames=1))
        for method, fake, mask in zip(shot["method"].iloc[1:], rendered.fakes, rendered.masks):
            if method != "self_blend":
                continue
            inside = mask >= 0.5
            shift = fake[inside].astype(float).mean(0) - rendered.real[inside].astype(float).mean(0)
            assert np.abs(shift).max() > 0.5, (real.video, shift)


def test_generation_is_deterministic_whatever_the_number_of_workers(tmp_path):
    sample.generate(tmp_path / "first", dataclasses.replace(QUICK, workers=2))
    sample.generate(tmp_path / "second", QUICK)
    assert _metadata(tmp_path / "first") == _metadata(tmp_path / "second")
    assert (tmp_path / "first" / "persons.csv").read_bytes() == (tmp_path / "second" / "persons.csv").read_bytes()
    videos = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").glob("*/*.mp4"))
    assert len(videos) == 18
    for video in videos:
        assert _frame_hashes(tmp_path / "first" / video) == _frame_hashes(tmp_path / "second" / video)


def test_another_seed_gives_other_names_and_shots():
    first, second = sample.plan(QUICK), sample.plan(dataclasses.replace(QUICK, seed=1))
    assert not set(first["video"]) & set(second["video"])
    assert list(first["seed"]) != list(second["seed"])


def test_the_encoder_is_byte_identical_for_identical_frames(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 48, 64, 3), dtype=np.uint8)
    for name in ("a.mp4", "b.mp4"):
        with mp4_writer(tmp_path / name, 15, sample.EncoderSettings()) as write:
            for frame in frames:
                write(frame)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_ensure_generates_the_configured_folders_then_leaves_them_alone(tmp_path):
    cfg = _quick_config(tmp_path, n_identities=3, max_videos=9)
    assert sample.ensure(cfg) is True
    for folder in (*cfg.data_dirs, cfg.test_dir):
        assert json.loads((folder / "metadata.json").read_text())
    persons = pd.read_csv(cfg.metadata.persons_csv)
    assert len(persons) == 9 and not list((tmp_path / "data").glob(".*"))  # no staging folder left
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*")}
    assert sample.ensure(cfg) is False
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*")}


def test_ensure_does_nothing_when_the_sample_is_disabled(tmp_path):
    cfg = _quick_config(tmp_path, enabled=False)
    assert sample.ensure(cfg) is False
    assert not (tmp_path / "data").exists()


def test_interrupted_generation_leaves_no_final_folder_and_resumes(tmp_path):
    cfg = _quick_config(tmp_path, n_identities=3, max_videos=9)  # three shots of three videos
    raw = json.dumps({key: value for key, value in config.to_dict(cfg).items() if key != "source"})
    child = subprocess.run([sys.executable, "-c", DIES_IN_THE_SECOND_SHOT, raw, str(tmp_path)],
                           stderr=subprocess.DEVNULL, timeout=300)
    written = [path.name for path in (tmp_path / "data").glob(".*/*.mp4")]
    assert child.returncode == KILLED and len([name for name in written if not name.startswith(".")]) == 3
    assert any(name.startswith(".") for name in written)  # the second shot's videos, half written
    assert not any(folder.exists() for folder in (*cfg.data_dirs, cfg.test_dir))
    assert sample.ensure(cfg) is True
    clean = _quick_config(tmp_path / "clean", n_identities=3, max_videos=9)
    sample.ensure(clean)
    for resumed, fresh in zip((*cfg.data_dirs, cfg.test_dir), (*clean.data_dirs, clean.test_dir)):
        assert (resumed / "metadata.json").read_text() == (fresh / "metadata.json").read_text()
        for video in json.loads((fresh / "metadata.json").read_text()):
            assert _frame_hashes(resumed / video) == _frame_hashes(fresh / video)


def test_missing_archive_is_a_one_line_error_naming_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(sample.SOURCES_ENV, str(tmp_path / "empty"))
    cfg = _quick_config(tmp_path, n_identities=3)  # barack_obama comes from the face-recognition sdist
    with pytest.raises(SampleSourceError, match="python -m dfhelpers.sample fetch") as error:
        sample.ensure(cfg)
    assert "\n" not in str(error.value)
    assert not any(folder.exists() for folder in (*cfg.data_dirs, cfg.test_dir))


def test_fetch_keeps_verified_archives_without_downloading(tmp_path):
    for archive in sample.ARCHIVES:
        shutil.copy(sample.sources_dir() / archive.filename, tmp_path / archive.filename)
    said: list[str] = []
    paths = sample.fetch(tmp_path, echo=said.append)
    assert paths == [tmp_path / archive.filename for archive in sample.ARCHIVES]
    assert len(said) == 2 and all("already present, sha256 verified" in line for line in said)


def test_sources_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(sample.SOURCES_ENV, str(tmp_path))
    assert sample.sources_dir() == tmp_path
    monkeypatch.delenv(sample.SOURCES_ENV)
    assert sample.sources_dir() == Path(sys.prefix) / "share" / "dfdetect" / "face-sources"


def test_dfdc_preset_is_full_hd_30_fps_10_seconds():
    spec = sample.frame_spec(SampleConfig(preset="dfdc"))
    assert (spec.width, spec.height, spec.fps, spec.n_frames) == (1920, 1080, 30, 300)


def test_every_identity_source_names_its_package_and_licence():
    packages = {"matplotlib", "skimage", *(archive.filename for archive in sample.ARCHIVES)}
    for identity in sample.IDENTITIES:
        assert len(identity.licence) > 10 and {source.origin for source in identity.sources} <= packages, identity
