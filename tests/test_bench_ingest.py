"""benchmarks/bench_ingest.py: notebooks 01-03 on part of a face-image set, timed, with the peak memory."""

import json

import pandas as pd

import videos
from conftest import load_benchmark


def test_ingest_runs_whole_families_of_a_face_set_and_reports_rates_and_memory(tmp_path):
    rows = [(f"{kind}{family}{k}.mp4", label, f"real{family}0.mp4" if label == "FAKE" else "")
            for family in range(6) for kind, label, k in (("real", "REAL", 0), ("fake", "FAKE", 1), ("fake", "FAKE", 2))]
    folder = videos.write_kaggle_faces(tmp_path / "faces", videos.tight_face(), rows)
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nfaces: {workers: 1}\n"
                                       "split: {balance: none, val_fraction: 0.25, test_fraction: 0.25}\n")
    out = tmp_path / "ingest.json"
    bench = load_benchmark("bench_ingest")
    assert bench.main([str(folder), "--config", str(tmp_path / "run.yaml"), "--limit", "13", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["items"] == 12 and result["items_in_folder"] == 18  # four whole families of three, not 13 items
    assert result["faces_found"] == 12 and set(result["stage_s"]) == {"01_list", "02_faces", "03_split"}
    assert result["peak_rss_mb"] > 100 and result["whole_folder_s_at_this_rate"] > 0
    assert pd.read_csv(folder / "metadata.csv").shape[0] == 18  # the folder itself is only read
