"""Dataset format 2 (part files, manifest last), the streaming writer and streaming readers.

What these protect: a dataset written block by block reads back exactly (whole, or streamed in
bounded batches), format 1 datasets still read, a write that fails leaves nothing that looks like
a dataset and the old one untouched, schema drift and missing files are refused naming the file and
the field, and generating a large pwiser dataset keeps memory bounded by one block.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adray.data import DataError, DatasetWriter, check_out_dir, dataset_uri, read_dataset, write_dataset

ROOT = Path(__file__).resolve().parents[2]


def _block(start: int, n: int) -> pd.DataFrame:
    i = np.arange(start, start + n)
    return pd.DataFrame({"id": i.astype(np.int64), "x": (i * 0.5).astype(np.float32),
                         "obs": [np.array([k, k + 1], np.float32) for k in i]})


def test_format2_round_trip_parts_row_groups_and_streaming(tmp_path: Path) -> None:
    out = tmp_path / "d"
    with DatasetWriter(out, source="unit", seed=3, part_rows=250, row_group_rows=100) as w:
        for b in range(3):
            w.write("train", _block(300 * b, 300))
        w.write("test", pa.Table.from_pandas(_block(900, 40), preserve_index=False))
        ds = w.close({"k": 1})
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == 2 and m["seed"] == 3 and m["meta"] == {"k": 1}
    train = m["splits"]["train"]
    assert train["rows"] == 900 and [f["rows"] for f in train["files"]] == [250, 250, 250, 150]
    assert train["schema"] == {"id": "int64", "x": "float32", "obs": "object"}
    assert train["arrow_schema"] == {"id": "int64", "x": "float", "obs": "list<float>"}
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"part-0000{i}.parquet" for i in range(4)]
    for f in train["files"]:
        md = pq.ParquetFile(out / "train" / f["name"]).metadata
        assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) <= 100
        assert f["bytes"] == (out / "train" / f["name"]).stat().st_size

    fs, paths = read_dataset(out).split_files("train")
    assert paths == [str(out / "train" / f"part-0000{i}.parquet") for i in range(4)]
    assert pq.ParquetFile(fs.open_input_file(paths[3])).metadata.num_rows == 150

    full = pd.concat([_block(0, 900)], ignore_index=True)
    got = read_dataset(out).read("train")
    pd.testing.assert_frame_equal(got.drop(columns="obs"), full.drop(columns="obs"))
    assert np.stack(got["obs"]).tolist() == np.stack(full["obs"]).tolist()
    batches = list(read_dataset(out).iter_batches("train", ["id"], batch_rows=64))
    assert max(b.num_rows for b in batches) <= 64
    assert np.concatenate([b.column("id").to_numpy() for b in batches]).tolist() == list(range(900))
    stats = read_dataset(out).file_stats("train")
    assert [s["rows"] for s in stats] == [250, 250, 250, 150] and all(s["row_groups"] == 3 for s in stats[:3])
    # the same rows written again in other blocks give the same files and hash (content, not history)
    again = write_dataset(tmp_path / "e", {"train": _block(0, 900), "test": _block(900, 40)}, source="unit", seed=3)
    assert again.manifest["splits"]["train"]["rows"] == 900 and ds.manifest["content_hash"]


def test_format1_dataset_still_reads(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    df = pd.DataFrame({"a": [1, 2, 3], "y": [0.0, 1.0, 0.0]})
    df.to_parquet(out / "train.parquet", index=False)
    (out / "manifest.json").write_text(json.dumps({
        "format": 1, "splits": {"train": {"rows": 3, "schema": {"a": "int64", "y": "float64"}, "sha256": "x"}},
        "content_hash": "h", "source": "old", "seed": None, "meta": {}}))
    ds = read_dataset(out)
    assert ds.format == 1 and ds.split_path("train") == out / "train.parquet"
    assert ds.split_files("train")[1] == [str(out / "train.parquet")]
    pd.testing.assert_frame_equal(ds.read("train"), df)
    assert [b.num_rows for b in ds.iter_batches("train", batch_rows=2)] == [2, 1]
    assert ds.file_stats("train")[0]["rows"] == 3
    (out / "train.parquet").unlink()
    with pytest.raises(DataError, match=r"old/train.parquet: listed in the manifest of .*old but missing"):
        read_dataset(out)


def test_failed_write_leaves_no_dataset_and_the_old_one_untouched(tmp_path: Path) -> None:
    out = tmp_path / "d"
    old = write_dataset(out, {"train": _block(0, 10)}, source="old")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(RuntimeError, match="generator died"):
        with DatasetWriter(out, source="new", overwrite=True, part_rows=4) as w:
            w.write("train", _block(0, 9))
            raise RuntimeError("generator died")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no temp dir left either
    assert read_dataset(out).manifest["content_hash"] == old.manifest["content_hash"]
    # a new location: a failure leaves nothing there at all
    with pytest.raises(DataError, match="split 'val' is empty"):
        with DatasetWriter(tmp_path / "new", source="new") as w:
            w.write("train", _block(0, 9))
            w.write("val", _block(0, 0))
            w.close()
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_existing_dataset_is_refused_without_overwrite(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", {"train": _block(0, 3)}, source="old")
    with pytest.raises(DataError, match="a dataset is already there; pass --overwrite"):
        DatasetWriter(tmp_path / "d", source="new")
    with pytest.raises(DataError, match="a dataset is already there; pass --overwrite"):
        check_out_dir(str(tmp_path / "d"), overwrite=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a dataset .* and not empty"):
        DatasetWriter(tmp_path / "junk", source="new", overwrite=True)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "keep"


def test_schema_mismatch_is_refused_at_write_and_at_open(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split 'train' block 2: field 'x' is double, expected float; every block"):
        with DatasetWriter(tmp_path / "d", source="unit") as w:
            w.write("train", _block(0, 5))
            w.write("train", _block(5, 5).astype({"x": np.float64}))
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match=r"split 'train' block 2: field 'obs' \(list<float>\) missing"):
        with DatasetWriter(tmp_path / "d", source="unit") as w:
            w.write("train", _block(0, 5))
            w.write("train", _block(5, 5).drop(columns="obs"))
    # a part replaced behind the manifest's back: reading names the file and the field
    write_dataset(tmp_path / "d", {"train": _block(0, 5)}, source="unit")
    part = tmp_path / "d" / "train" / "part-00000.parquet"
    _block(0, 5).astype({"id": np.float64}).to_parquet(part, index=False)
    with pytest.raises(DataError, match=r"train/part-00000.parquet: field 'id' is double, expected int64 \(split 'train'"):
        list(read_dataset(tmp_path / "d").iter_batches("train"))
    with pytest.raises(DataError, match=r"part-00000.parquet: field 'id' is double"):
        read_dataset(tmp_path / "d").read("train")


def test_bad_locations_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: not a dataset \(no manifest.json\); create one"):
        read_dataset(tmp_path / "nowhere")
    write_dataset(tmp_path / "d", {"train": _block(0, 5)}, source="unit")
    (tmp_path / "d" / "train" / "part-00000.parquet").unlink()
    with pytest.raises(DataError, match=r"d/train/part-00000.parquet: listed in the manifest .* missing \(1 of 1"):
        read_dataset(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt manifest"):
        read_dataset(tmp_path / "d")
    with pytest.raises(DataError, match=r"no split 'val'"):
        write_dataset(tmp_path / "e", {"train": _block(0, 2)}, source="unit")
        read_dataset(tmp_path / "e").read("val")
    assert dataset_uri(Path("s3://bucket/x")) == "s3://bucket/x"  # what Path does to a URI is repaired


def test_data_show_reads_footers_only(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adray.cli import app

    with DatasetWriter(tmp_path / "d", source="unit", part_rows=4) as w:
        w.write("train", _block(0, 10))
        w.close()
    res = CliRunner().invoke(app, ["data", "show", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "format=2" in res.output and "3 file(s)" in res.output
    assert "train/part-00002.parquet" in res.output and "2 rows" in res.output


_PEAK = """
import resource, sys
sys.path[:0] = [{root!r} + "/platform", {root!r}]
from workloads.pwiser import data as d
from workloads.pwiser.config import PWiseRConfig
d.GEN_BLOCK_ROWS = d.PILOT_ROWS = 25_000
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d.make_data(PWiseRConfig(rows={rows}, num_users=500, num_items=200), sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def _make_peak_mb(rows: int, out: Path) -> int:
    res = subprocess.run([sys.executable, "-c", _PEAK.format(root=str(ROOT), rows=rows), str(out)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return int(res.stdout.split()[-1])


def test_pwiser_generation_memory_is_bounded_by_one_block(tmp_path: Path) -> None:
    """16x the rows, the same peak (one 25k-row block): whole-frame generation took ~600 bytes a
    row, i.e. +200 MB for these 375k extra rows."""
    small = _make_peak_mb(25_000, tmp_path / "s")
    large = _make_peak_mb(400_000, tmp_path / "l")
    ds = read_dataset(tmp_path / "l")
    assert sum(ds.manifest["splits"][s]["rows"] for s in ds.splits) == 400_000
    assert large - small < 40, (small, large)


@pytest.mark.slow
def test_cli_data_make_pwiser_millions_of_rows_stays_flat(tmp_path: Path) -> None:
    """`adray data make pwiser` at 3M rows peaks within 150 MB of 300k rows (whole frames: +1.6 GB)."""
    import resource

    def peak(rows: int, out: Path) -> int:
        script = ("import resource, subprocess, sys\n"
                  f"subprocess.run([{str(Path(sys.executable).with_name('adray'))!r}, 'data', 'make', 'pwiser', "
                  f"'--out', {str(out)!r}, '--set', 'rows={rows}'], check=True, stdout=subprocess.DEVNULL)\n"
                  "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n")
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        return int(res.stdout.split()[-1])

    assert resource  # measured in a child of a child: this test process's own peak plays no part
    small, large = peak(300_000, tmp_path / "s"), peak(3_000_000, tmp_path / "l")
    assert read_dataset(tmp_path / "l").manifest["splits"]["train"]["rows"] > 2_300_000
    assert large - small < 150, (small, large)


_IMPORT_PEAK = """
import resource, sys
sys.path[:0] = [{root!r} + "/platform", {root!r}]
from adray.data import csvfile
from workloads.pwiser import data as d
from workloads.pwiser.config import PWiseRConfig
csvfile.CSV_BLOCK_BYTES = 1 << 20
d.GUARD_SAMPLE_ROWS, d.SPOOL_BATCH_ROWS = 20_000, 8_192
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d.import_aliexpress([sys.argv[1]], sys.argv[2], PWiseRConfig())
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def _aliexpress_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    click = rng.random(rows) < 0.1
    cols = {f"categorical_{j}": rng.integers(0, 50 * (j + 1), rows) for j in range(1, 17)}
    cols |= {f"numerical_{j}": rng.random(rows).round(5) for j in range(1, 41)}
    cols |= {"click": click.astype(int), "conversion": (click & (rng.random(rows) < 0.2)).astype(int)}
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_aliexpress_import_memory_is_bounded_by_one_chunk(tmp_path: Path) -> None:
    """10x the rows of a CSV, the same peak (1 MB chunks): the whole-frame import held the file
    several times over (read, validated copies, concat, split copies)."""
    peaks = []
    for rows in (20_000, 200_000):
        src = _aliexpress_csv(tmp_path / f"ali{rows}.csv", rows)
        res = subprocess.run([sys.executable, "-c", _IMPORT_PEAK.format(root=str(ROOT)), str(src),
                              str(tmp_path / f"ds{rows}")], capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        peaks.append(int(res.stdout.split()[-1]))
        ds = read_dataset(tmp_path / f"ds{rows}")
        assert sum(ds.manifest["splits"][s]["rows"] for s in ds.splits) == rows
        assert ds.meta["leak_guard"]["sample_rows"] == 20_000 and ds.meta["leak_guard"]["rows"] == rows
    assert peaks[1] - peaks[0] < 60, peaks
