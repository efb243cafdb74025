"""benchmarks/vamo_table.py merge: a side run's models join a results directory only when its STL
is the same experiment's (same figures, same targets), with Delta m% against that STL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from vamo_table import merge  # noqa: E402  (benchmarks/ is not a package)

STL = {"gmv": 100.0, "dir_gmv": 50.0, "cart": 10.0, "score": 9.0}


def _write(d: Path, methods: dict, select: dict, log: list[dict]) -> None:
    d.mkdir()
    (d / "eval-s0.json").write_text(json.dumps({"methods": methods, "wall_s": {"g": 1.0}, "commands": {"g": "x"}}))
    (d / "select-s0.json").write_text(json.dumps(select))
    (d / "train-log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def test_merge_adds_the_side_runs_models_with_delta_m_against_the_same_stl(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    _write(dst, {"stl": {**STL, "delta_m": 0.0}, "vamo": {**STL, "delta_m": 0.0}},
           {"stl": {"task_targets": [1, 2, 3]}}, [{"variant": "stl", "seed": 0}])
    _write(src, {"stl": dict(STL), "new": {"gmv": 110.0, "dir_gmv": 40.0, "cart": 10.0, "score": 9.5}},
           {"stl": {"task_targets": [1, 2, 3]}, "new": {"task_targets": [2, 2, 2]}},
           [{"variant": "stl", "seed": 0}, {"variant": "new", "seed": 0}])
    merge(argparse.Namespace(source=str(src), out=str(dst)))
    got = json.loads((dst / "eval-s0.json").read_text())["methods"]
    assert got["new"]["delta_m"] == pytest.approx((-10 + 20 + 0) / 3)  # mean relative drop vs STL, %
    assert got["vamo"] == {**STL, "delta_m": 0.0}  # what was there stays
    assert json.loads((dst / "select-s0.json").read_text())["new"] == {"task_targets": [2, 2, 2]}
    assert [json.loads(x)["variant"] for x in (dst / "train-log.jsonl").read_text().splitlines()] == ["stl", "new"]


def test_merge_refuses_a_side_run_whose_stl_bid_otherwise(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    _write(dst, {"stl": dict(STL)}, {"stl": {"task_targets": [1, 2, 3]}}, [])
    _write(src, {"stl": {**STL, "score": 9.1}, "new": dict(STL)}, {"stl": {"task_targets": [1, 2, 3]}}, [])
    before = (dst / "eval-s0.json").read_text()
    with pytest.raises(SystemExit, match="score differ"):
        merge(argparse.Namespace(source=str(src), out=str(dst)))
    assert (dst / "eval-s0.json").read_text() == before  # nothing written


def test_merge_refuses_a_source_with_no_evaluation(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit, match="no eval-s"):
        merge(argparse.Namespace(source=str(tmp_path / "src"), out=str(tmp_path)))


def test_merge_refuses_a_seed_the_target_has_not_evaluated(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    _write(src, {"stl": dict(STL)}, {"stl": {"task_targets": [1, 2, 3]}}, [])
    dst.mkdir()
    with pytest.raises(SystemExit, match="eval-s0.json: missing"):
        merge(argparse.Namespace(source=str(src), out=str(dst)))
    assert list(dst.iterdir()) == []  # nothing written
