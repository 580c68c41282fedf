import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from dfhelpers import metadata
from dfhelpers.errors import MetadataError


def make_part(folder: Path, entries: dict, files: list[str] | None = None) -> Path:
    """A DFDC part folder: metadata.json plus (empty) video files for every entry or `files`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(entries))
    for name in entries if files is None else files:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def two_parts(tmp_path):
    part0 = make_part(tmp_path / "dfdc_train_part_0", {
        "real_a.mp4": {"label": "REAL", "split": "train", "original": None},
        "fake_a1.mp4": {"label": "FAKE", "split": "train", "original": "real_a.mp4"},
    })
    part1 = make_part(tmp_path / "dfdc_train_part_1", {
        "real_b.mp4": {"label": "REAL", "split": "train", "original": None},
        "fake_a2.mp4": {"label": "FAKE", "split": "train", "original": "real_a.mp4"},
    })
    return [part0, part1]


def test_read_videos_gives_one_row_per_video_across_parts(two_parts):
    videos = metadata.read_videos(two_parts)
    assert list(videos.columns) == [*metadata.COLUMNS, "split"]  # DFDC's own split key is kept, not dropped
    assert sorted(videos["video"]) == ["fake_a1.mp4", "fake_a2.mp4", "real_a.mp4", "real_b.mp4"]
    assert set(videos["part"]) == {"dfdc_train_part_0", "dfdc_train_part_1"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in videos["path"])


def test_unknown_entry_keys_are_kept_as_columns_of_the_video_table(tmp_path):
    part = make_part(tmp_path / "ffpp", {
        "real.mp4": {"label": "REAL", "method": "youtube"},
        "fake.mp4": {"label": "FAKE", "original": "real.mp4", "method": "Deepfakes", "source": "ff++"},
    })
    videos = metadata.read_videos([part]).set_index("video")
    assert videos.loc["fake.mp4", "method"] == "Deepfakes" and videos.loc["real.mp4", "method"] == "youtube"
    assert videos.loc["fake.mp4", "source"] == "ff++" and pd.isna(videos.loc["real.mp4", "source"])
    assert metadata.list_videos(part).set_index("video").loc["fake.mp4", "method"] == "Deepfakes"


def test_fake_belongs_to_the_group_of_its_original(two_parts):
    videos = metadata.read_videos(two_parts).set_index("video")
    assert videos.loc["fake_a1.mp4", "group"] == "real_a.mp4"
    assert videos.loc["fake_a2.mp4", "group"] == "real_a.mp4"
    assert videos.loc["real_b.mp4", "group"] == "real_b.mp4"


def test_persons_csv_fills_the_person_column(two_parts, tmp_path):
    persons = tmp_path / "persons.csv"
    persons.write_text("video,person\nreal_a.mp4,ann\nfake_a1.mp4,ann\nreal_b.mp4,bob\n")
    videos = metadata.read_videos(two_parts, persons_csv=persons).set_index("video")
    assert videos.loc["fake_a1.mp4", "person"] == "ann"
    assert videos.loc["fake_a2.mp4", "person"] == ""


def test_videos_per_part_counts_each_label_with_totals(two_parts):
    counts = metadata.videos_per_part(metadata.read_videos(two_parts))
    assert counts.loc["total", "FAKE"] == 2 and counts.loc["total", "total"] == 4
    assert counts.loc["dfdc_train_part_1", "REAL"] == 1


def test_unparseable_json_names_the_file(tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    (part / "metadata.json").write_text("{not json")
    with pytest.raises(MetadataError, match=r"metadata.json: not valid JSON \(line 1"):
        metadata.read_videos([part])


@pytest.mark.parametrize("entry, message", [
    ({"split": "train"}, "has no 'label'"),
    ({"label": "MAYBE"}, "unknown label 'MAYBE'"),
    ({"label": "FAKE", "original": None}, "has no 'original'"),
    ("REAL", "must be an object"),
])
def test_bad_entry_is_a_one_line_error_naming_file_and_entry(tmp_path, entry, message):
    part = make_part(tmp_path / "part", {"x.mp4": entry})
    with pytest.raises(MetadataError, match=message) as err:
        metadata.read_videos([part])
    assert "x.mp4" in str(err.value) and "metadata.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_entry_whose_video_is_missing_is_skipped_and_counted(tmp_path):
    part = make_part(tmp_path / "part", {
        "here.mp4": {"label": "REAL"}, "gone1.mp4": {"label": "REAL"}, "gone2.mp4": {"label": "REAL"},
    }, files=["here.mp4"])
    with pytest.warns(UserWarning, match="2 entries without its file"):
        videos = metadata.read_videos([part])
    assert list(videos["video"]) == ["here.mp4"]


def test_missing_video_is_an_error_when_strict(tmp_path):
    part = make_part(tmp_path / "part", {"gone.mp4": {"label": "REAL"}}, files=[])
    with pytest.raises(MetadataError, match="gone.mp4"):
        metadata.read_videos([part], strict=True)


def test_video_file_without_entry_is_an_error(tmp_path):
    part = make_part(tmp_path / "part", {"a.mp4": {"label": "REAL"}}, files=["a.mp4", "stray.mp4"])
    with pytest.raises(MetadataError, match="stray.mp4: no entry in"):
        metadata.read_videos([part])


def test_entry_escaping_its_folder_is_an_error(tmp_path):
    part = make_part(tmp_path / "part", {"../evil.mp4": {"label": "REAL"}}, files=[])
    with pytest.raises(MetadataError, match="escapes its folder"):
        metadata.read_videos([part])


def test_same_name_in_two_parts_is_an_error(tmp_path):
    part0 = make_part(tmp_path / "p0", {"a.mp4": {"label": "REAL"}})
    part1 = make_part(tmp_path / "p1", {"a.mp4": {"label": "REAL"}})
    with pytest.raises(MetadataError, match=r"'a.mp4' appears in parts \['p0', 'p1'\]"):
        metadata.read_videos([part0, part1])


def test_folder_without_metadata_is_an_error(tmp_path):
    (tmp_path / "part").mkdir()
    with pytest.raises(MetadataError, match="no labels file; a data folder needs one of metadata.json"):
        metadata.read_videos([tmp_path / "part"])


def test_list_videos_without_metadata_lists_unlabelled_videos(tmp_path):
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "a.MOV").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    videos = metadata.list_videos(tmp_path)
    assert list(videos["video"]) == ["a.MOV", "b.mp4"]
    assert videos["label"].isna().all()


def test_reading_never_writes_to_the_data_folder(two_parts):
    before = {p: p.stat().st_mtime_ns for part in two_parts for p in part.iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metadata.read_videos(two_parts)
    after = {p: p.stat().st_mtime_ns for part in two_parts for p in part.iterdir()}
    assert before == after


def test_measuring_accepts_fakes_without_originals_and_lists_unlisted_videos_unlabelled(tmp_path):
    part = make_part(tmp_path, {"real.mp4": {"label": "REAL"}, "fake.mp4": {"label": "FAKE"}},
                     files=["real.mp4", "fake.mp4", "extra.mp4"])
    with pytest.raises(MetadataError, match="FAKE entry 'fake.mp4' has no 'original'"):
        metadata.read_part(part)  # training needs the family
    videos = metadata.list_videos(part).set_index("video")
    assert videos["label"].to_dict() == {"real.mp4": "REAL", "fake.mp4": "FAKE", "extra.mp4": None}


def test_a_labels_csv_labels_a_folder_of_videos_for_measuring(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    labels = tmp_path / "labels_elsewhere.csv"
    labels.write_text("video,label,method\na.mp4,REAL,youtube\nb.mp4,FAKE,swap\ngone.mp4,FAKE,swap\n")
    with pytest.warns(UserWarning, match=r"1 labelled video\(s\) not in the folder \(first: 'gone.mp4'\)"):
        videos = metadata.list_videos(tmp_path, labels).set_index("video")
    assert videos["label"].to_dict() == {"a.mp4": "REAL", "b.mp4": "FAKE", "c.mp4": None}
    assert videos.loc["b.mp4", "method"] == "swap"
    labels.write_text("video,label\na.mp4,real\n")
    with pytest.raises(MetadataError, match=r"labels_elsewhere.csv: row 2: video 'a.mp4' has unknown label 'real'"):
        metadata.list_videos(tmp_path, labels)
