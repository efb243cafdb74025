"""``adray data import auctionnet-trajectory FILE... --out DIR``: AuctionNet trajectory files as they are.

Reads CSV (as AuctionNet's ``rl_data_generator`` writes it) or Parquet with the columns of
:data:`trajectory.COLUMNS`, streaming, through the platform's file reader
(``adray.data.csvfile.iter_frames``: pyarrow's streaming CSV reader, Parquet row group by row group;
the same message as every importer for a missing, empty, header-only or unreadable file). Every
problem is a :class:`DataError` naming the file, the line (CSV: the file's line number, the header
being line 1; Parquet: ``row``) and the field; nothing is written unless every row of every file is
valid (``DatasetWriter``: the manifest last).

Memory is bounded by one delivery period's rows, not the files. What needs more than one row is
per trajectory (period, advertiser): the checks below, the score penalty and the return-to-go (a
suffix sum over the trajectory's steps); a trajectory lies in one period. So a file is read a period
at a time: **the rows of a period must be together in a file** (AuctionNet writes one file per
period; a file of several periods one after another is read as well), and a file in which a
period's rows start again after another period's is refused, naming the line (sort it by
``deliveryPeriodIndex``). A period may continue in another file (other advertisers). Each period's
checked rows go to a local temporary spool (about the dataset's size on disk); once every file is
read the splits are known (the last two periods are validation and test) and the periods are
written in order, a period's rows from several files merged (a step of a trajectory found in two
files is refused then). The day length T behind "past the day's end" is read per period of a file
(it was per file; the same for AuctionNet's one-period files).
Accepted state spellings: ``(0.1, 0.2, ...)``, ``[0.1, 0.2, ...]``, ``[0.1 0.2 ...]`` and NumPy 2's
``(np.float64(0.1), ...)``. A file whose states all have another length than 16 (e.g. 17 with a
CPA-compliance feature) is refused as a whole, naming the length found and the 16 features expected.

What cannot be true is refused: a non-finite number, a budget or CPA constraint <= 0, a negative
bid coefficient, cost or conversion count; and per trajectory (period, advertiser): a step twice, a
missing step (steps run 0, 1, ... with none left out), a step past the day's end (a day of T steps,
T read from the ``timeleft`` state feature = (T - t) / T), ``done`` = 1 before the last step, and a
last step without ``done`` = 1 (AuctionNet ends each trajectory at its first done: the day's last
step or the budget spent).

Tasks. AuctionNet's own files have one objective (conversions under a CPA constraint) and no task
column: they are imported as a *single-task* dataset (every trajectory task 0; the manifest's
``task_mapping`` says ``single``), which no VAMO method trains on (they all train the three tasks of
:data:`config.TASKS`; ``data.load_split`` refuses it by name). Tasks are never invented: a
multi-task dataset needs an explicit mapping, recorded in the manifest:

* a ``taskIndex`` column in the files (our writer's, :mod:`trajectory`), or another column named by
  ``--option task_column=NAME``, holding task indexes (0..2) or names (gmv, dir_gmv, cart);
* ``--option task_column=advertiserCategoryIndex --option task_map=0:gmv,1:gmv,2:dir_gmv,...``:
  each value of that column mapped to a task; a value the map lacks is refused.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import DataError
from adray.data.csvfile import is_parquet, iter_frames
from workloads.vamo.config import STATE_DIM, TASKS
from workloads.vamo.trajectory import COLUMNS, STATE_FEATURES, TASK_COLUMN, period_rows, write_periods

FORMAT = "auctionnet-trajectory"
TRAJECTORY = ["deliveryPeriodIndex", "advertiserNumber"]

_NUMERIC = ("deliveryPeriodIndex", "advertiserNumber", "advertiserCategoryIndex", "budget",
            "CPAConstraint", "realAllCost", "realAllConversion", "timeStepIndex", "action", "reward",
            "reward_continuous", "done")
_INTEGER = ("deliveryPeriodIndex", "advertiserNumber", "advertiserCategoryIndex", "timeStepIndex", "done")
_STRIP = re.compile(r"np\.float(?:16|32|64)\(|[()\[\],]")
CSV_BLOCK_BYTES = 32 << 20
"""Bytes of CSV parsed at once (one chunk; a period's rows may span chunks)."""
_TEXT = {"state": pa.string(), "next_state": pa.string()}  # never inferred (an empty first block)


def _line(i: int, csv: bool) -> str:
    """0-based file row ``i`` as the user finds it: ``line i + 2`` of a CSV (the header is line 1),
    ``row i`` of a Parquet file."""
    return f"line {i + 2}" if csv else f"row {i}"


def _where(path: Path, i: int, csv: bool) -> str:
    return f"{path}: {_line(i, csv)}"


def _plain(v: Any) -> Any:
    """A cell as the user wrote it (``inf``, ``5``), not NumPy's repr (``np.float64(inf)``)."""
    return v.item() if isinstance(v, np.generic) else v


def _state_text(v: Any) -> str | None:
    """The state cell as text; None when empty (NaN / None / '')."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join(str(x) for x in v)
    s = str(v).strip()
    return s or None


def parse_states(values: Sequence[Any], path: Path, field: str, csv: bool, allow_empty: np.ndarray,
                 offset: int = 0) -> np.ndarray:
    """(R, 16) float64 from the text tuples of one column; NaN rows where empty and allowed.
    ``offset``: the file row of ``values[0]`` (0-based, for messages)."""
    texts = [_state_text(v) for v in values]
    out = np.full((len(texts), STATE_DIM), np.nan)
    for i, s in enumerate(texts):
        at = _where(path, offset + i, csv)
        if s is None:
            if not allow_empty[i]:
                raise DataError(f"{at}: field {field!r} is empty; expected a tuple of "
                                f"{STATE_DIM} floats (only a row with done = 1 may have no next_state)")
            continue
        parts = _STRIP.sub(" ", s).split()
        if field == "state" and offset + i == 0 and len(parts) != STATE_DIM:
            raise DataError(
                f"{path}: the states of this file have {len(parts)} values (line {i + 2 if csv else i}); "
                f"this importer reads AuctionNet's {STATE_DIM}-feature state "
                f"({', '.join(STATE_FEATURES)}); convert the file or drop the extra features")
        if len(parts) != STATE_DIM:
            raise DataError(f"{at}: field {field!r} has {len(parts)} values, expected {STATE_DIM}: {s[:80]!r}")
        try:
            row = [float(p) for p in parts]
        except ValueError:
            raise DataError(f"{at}: field {field!r} is not a tuple of numbers: {s[:80]!r}") from None
        if not np.all(np.isfinite(row)):
            raise DataError(f"{at}: field {field!r} has NaN or inf: {s[:80]!r}")
        out[i] = row
    return out


def _span(offset: int, rows: int, csv: bool) -> str:
    """The rows of a chunk, for messages: ``lines 2-101`` / ``rows 0-99``."""
    first = offset + 2 if csv else offset
    return f"{'lines' if csv else 'rows'} {first}-{first + rows - 1}"


def _check_numbers(df: pd.DataFrame, path: Path, csv: bool, offset: int = 0) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in _NUMERIC:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(col.isna().to_numpy() | ~np.isfinite(col.to_numpy(dtype=float, na_value=np.nan)))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{_where(path, offset + i, csv)}: field {c!r}: {_plain(df[c].iloc[i])!r} is not a "
                            f"finite number ({len(bad)} such row(s) in {_span(offset, len(df), csv)})")
        if c in _INTEGER:
            frac = np.flatnonzero(col.to_numpy(dtype=float) != np.round(col.to_numpy(dtype=float)))
            if len(frac):
                i = int(frac[0])
                raise DataError(f"{_where(path, offset + i, csv)}: field {c!r}: {_plain(df[c].iloc[i])!r}; "
                                "expected an integer")
        out[c] = col
    checks = [
        ("budget", out["budget"] <= 0, "expected a budget > 0"),
        ("CPAConstraint", out["CPAConstraint"] <= 0, "expected a CPA constraint > 0"),
        ("timeStepIndex", out["timeStepIndex"] < 0, "expected a step index >= 0"),
        ("done", ~out["done"].isin([0, 1]), "expected 0 or 1"),
        ("action", out["action"] < 0, "expected a bid coefficient >= 0"),
        ("realAllCost", out["realAllCost"] < 0, "expected >= 0"),
        ("realAllConversion", out["realAllConversion"] < 0, "expected >= 0"),
    ]
    for field, bad, expected in checks:
        rows = np.flatnonzero(bad.to_numpy())
        if len(rows):
            i = int(rows[0])
            raise DataError(f"{_where(path, offset + i, csv)}: field {field!r}: {_plain(df[field].iloc[i])!r}; "
                            f"{expected}")
    return out


@dataclasses.dataclass(frozen=True)
class TaskMapping:
    """How trajectories get their task: ``column`` (None: no column, single-task) and ``values``
    (column value -> task index; None: the column holds task indexes or names)."""

    column: str | None
    values: dict[float, int] | None = None

    @classmethod
    def from_options(cls, task_column: str, task_map: str) -> TaskMapping | None:
        """From the importer's options; None when neither is given (the files decide)."""
        if task_map and not task_column:
            raise DataError(f"{FORMAT}: --option task_map={task_map!r} needs --option task_column=COLUMN (the "
                            "column whose values it maps, e.g. advertiserCategoryIndex)")
        if not task_column:
            return None
        if not task_map:
            return cls(task_column)
        values: dict[float, int] = {}
        for pair in task_map.split(","):
            key, sep, task = pair.partition(":")
            try:
                value = float(key)
            except ValueError:
                value = None
            k = _task_index(task.strip())
            if not sep or value is None or k is None:
                raise DataError(f"{FORMAT}: --option task_map: {pair.strip()!r}; expected VALUE:TASK pairs separated "
                                f"by commas, TASK one of {list(TASKS)} or 0..{len(TASKS) - 1} (e.g. 0:gmv,1:dir_gmv)")
            if value in values:
                raise DataError(f"{FORMAT}: --option task_map: value {key.strip()} mapped twice")
            values[value] = k
        return cls(task_column, values)

    def describe(self) -> dict[str, Any]:
        if self.column is None:
            return {"mode": "single", "from": None,
                    "note": "the files have no task column and no task mapping was given: one objective "
                            "(AuctionNet's), every trajectory task 0; no VAMO method trains on it"}
        out: dict[str, Any] = {"mode": "multi", "from": f"column {self.column}"}
        if self.values is not None:
            out["map"] = {_show(v): TASKS[k] for v, k in sorted(self.values.items())}
        return out


def _task_index(text: str) -> int | None:
    if text in TASKS:
        return TASKS.index(text)
    if text.isdigit() and int(text) < len(TASKS):
        return int(text)
    return None


def _show(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _tasks(df: pd.DataFrame, mapping: TaskMapping, path: Path, csv: bool, offset: int = 0) -> np.ndarray:
    """(R,) int64 task of each row under ``mapping`` (zeros when single-task)."""
    if mapping.column is None:
        return np.zeros(len(df), np.int64)
    c = mapping.column
    if c not in df.columns:
        raise DataError(f"{path}: line 1: no column {c!r} (the task column: " + (
            "--option task_column" if c != TASK_COLUMN else f"{TASK_COLUMN!r}, as another file has") + ")")
    raw = df[c]
    if mapping.values is None:
        names = raw.astype(str).str.strip()
        by_name = names.map({t: k for k, t in enumerate(TASKS)})
        num = pd.to_numeric(raw, errors="coerce")
        task = by_name.where(by_name.notna(), num.where(num.isin(range(len(TASKS)))))
        expected = f"a task index 0..{len(TASKS) - 1} or name ({', '.join(TASKS)})"
    else:
        num = pd.to_numeric(raw, errors="coerce")
        task = num.map(mapping.values)
        expected = f"a value of task_map ({', '.join(str(_show(v)) for v in sorted(mapping.values))})"
    bad = np.flatnonzero(task.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{_where(path, offset + i, csv)}: field {c!r}: {_plain(raw.iloc[i])!r}; expected {expected} "
                        f"({len(bad)} such row(s) in {_span(offset, len(df), csv)})")
    return task.to_numpy(np.int64)


def _check_trajectories(out: pd.DataFrame, states: np.ndarray, path: Path, csv: bool) -> None:
    """Each (period, advertiser) runs steps 0, 1, ..., L-1 within the day and ends at its one done
    (``out``: whole trajectories, their file rows in ``_row``)."""
    order = np.lexsort((out["timeStepIndex"].to_numpy(), out["advertiserNumber"].to_numpy(),
                        out["deliveryPeriodIndex"].to_numpy()))
    file_row = out["_row"].to_numpy()
    period = out["deliveryPeriodIndex"].to_numpy()[order].astype(np.int64)
    adv = out["advertiserNumber"].to_numpy()[order].astype(np.int64)
    step = out["timeStepIndex"].to_numpy()[order].astype(np.int64)
    done = out["done"].to_numpy()[order] == 1
    first = np.r_[True, (period[1:] != period[:-1]) | (adv[1:] != adv[:-1])]
    last = np.r_[first[1:], True]
    prev = np.r_[-1, step[:-1]]

    def refuse(j: int, field: str, text: str) -> None:
        raise DataError(f"{_where(path, int(file_row[order[j]]), csv)}: field {field!r}: {text} (trajectory of period "
                        f"{period[j]}, advertiser {adv[j]})")

    gap = np.flatnonzero(np.where(first, step != 0, step != prev + 1))
    if len(gap):
        j = int(gap[0])
        missing = 0 if first[j] else prev[j] + 1
        refuse(j, "timeStepIndex", f"step {step[j]} {'starts the trajectory' if first[j] else f'follows step {prev[j]}'}"
               f"; step {missing} is missing (a trajectory has every step from 0 to its done)")
    left = states[order, 0]  # timeleft = (T - t) / T
    known = (step > 0) & (left < 1) & (left > 0)
    if known.any():
        steps_per_day = int(round(float(np.median(step[known] / (1 - left[known])))))
        past = np.flatnonzero((step >= steps_per_day) | (left <= 0))
        if len(past):
            j = int(past[0])
            refuse(j, "timeStepIndex", f"step {step[j]} is past the day's end (a day of {steps_per_day} steps, "
                   f"0..{steps_per_day - 1}, read from the timeleft state feature; this row's timeleft is {left[j]:g})")
    early = np.flatnonzero(done & ~last)
    if len(early):
        j = int(early[0])
        end = int(np.flatnonzero(last[j:])[0]) + j
        refuse(j, "done", f"1 at step {step[j]}, but the trajectory goes on to step {step[end]}; done = 1 only at a "
               "trajectory's last step")
    never = np.flatnonzero(last & ~done)
    if len(never):
        j = int(never[0])
        refuse(j, "done", f"0 at step {step[j]}, the trajectory's last row: it never ends (a trajectory ends with "
               "done = 1 at the day's last step or when the budget is spent); is the file cut short?")


def read_auctionnet(path: Path, mapping: TaskMapping | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One validated file, whole (small files): its numeric columns (+ ``taskIndex`` under
    ``mapping``: by default the file's ``taskIndex`` column if it has one, else single-task) and its
    (R, 16) states, its periods in file order."""
    groups = list(_file_periods(Path(path), mapping))
    out = pd.concat([g[0] for g in groups], ignore_index=True).drop(columns="_row")
    return out, np.concatenate([g[1] for g in groups])


def _check_chunk(df: pd.DataFrame, path: Path, csv: bool, offset: int, mapping: TaskMapping,
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """The row-by-row checks of one chunk (file rows ``offset``...): numbers, states, tasks."""
    out = _check_numbers(df, path, csv, offset)
    done = out["done"].to_numpy() == 1
    states = parse_states(df["state"].tolist(), path, "state", csv, np.zeros(len(df), bool), offset)
    parse_states(df["next_state"].tolist(), path, "next_state", csv, done, offset)
    out[TASK_COLUMN] = _tasks(df, mapping, path, csv, offset)
    out["_row"] = np.arange(offset, offset + len(df))
    return out, states


def _check_period(out: pd.DataFrame, states: np.ndarray, path: Path, csv: bool, mapping: TaskMapping) -> None:
    """The per-trajectory checks of one period's rows of a file."""
    key = out.groupby(TRAJECTORY)
    for field in ("budget", "CPAConstraint", TASK_COLUMN):
        varying = key[field].nunique()
        if (varying > 1).any():
            p, a = varying.index[int(np.argmax(varying.to_numpy() > 1))]
            name = mapping.column if field == TASK_COLUMN and mapping.column else field
            raise DataError(f"{path}: field {name!r} changes within the trajectory of period {p}, "
                            f"advertiser {a}; expected one value per trajectory")
    dup = out.duplicated([*TRAJECTORY, "timeStepIndex"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"{_where(path, int(out['_row'].iloc[i]), csv)}: field 'timeStepIndex': step "
                        f"{int(out['timeStepIndex'].iloc[i])} appears twice in the same trajectory")
    _check_trajectories(out, states, path, csv)


def _file_periods(path: Path, given: TaskMapping | None,
                  ) -> Iterator[tuple[pd.DataFrame, np.ndarray, TaskMapping]]:
    """One file, a period at a time: ``(rows, states, mapping)`` of each period, checked, in file
    order (``rows``: the numeric columns, ``taskIndex`` and ``_row``, the 0-based file row).

    Raises:
        DataError: a bad row or trajectory, or a period whose rows start again after another's.
    """
    csv = not is_parquet(path)
    mapping, offset = given, 0
    current: int | None = None
    pending: list[tuple[pd.DataFrame, np.ndarray]] = []
    finished: dict[int, int] = {}  # period -> the file row of its first row

    def group() -> tuple[pd.DataFrame, np.ndarray, TaskMapping]:
        out = pd.concat([o for o, _ in pending], ignore_index=True)
        states = np.concatenate([st for _, st in pending])
        assert mapping is not None
        _check_period(out, states, path, csv, mapping)
        return out, states, mapping

    for df in iter_frames(path, FORMAT, block_bytes=CSV_BLOCK_BYTES, column_types=_TEXT):
        if offset == 0:
            missing = [c for c in COLUMNS if c not in df.columns]
            if missing:
                raise DataError(f"{path}: line 1: missing column(s) {missing}; an AuctionNet trajectory file has "
                                f"{list(COLUMNS)}")
            if mapping is None:
                mapping = TaskMapping(TASK_COLUMN if TASK_COLUMN in df.columns else None)
        out, states = _check_chunk(df.reset_index(drop=True), path, csv, offset, mapping)
        period = out["deliveryPeriodIndex"].to_numpy()
        starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(period)]):
            p = int(period[a])
            if p != current:
                if current is not None:
                    yield group()
                    finished[current] = int(pending[0][0]["_row"].iloc[0])
                if p in finished:
                    raise DataError(
                        f"{_where(path, offset + int(a), csv)}: field 'deliveryPeriodIndex': period {p} again, after "
                        f"the rows of period {current} (its rows began at {_line(finished[p], csv)}); "
                        "this importer reads a period at a time and needs each period's rows together in a file "
                        "(AuctionNet writes one file per period): sort the file by deliveryPeriodIndex")
                current, pending = p, []
            pending.append((out.iloc[a:b], states[a:b]))
        offset += len(df)
    if current is not None:
        yield group()


class _Spool:
    """Checked periods' dataset rows in local temporary Parquet files, one per (file, period)."""

    def __init__(self, root: Path) -> None:
        self.root, self.files = root, {}

    def add(self, rows: pd.DataFrame) -> None:
        p = int(rows["period"].iloc[0])
        path = self.root / f"{sum(map(len, self.files.values())):06d}.parquet"
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
        self.files.setdefault(p, []).append(path)

    def periods(self, files: Sequence[Path]) -> Iterator[pd.DataFrame]:
        """Each period's rows, periods in order; a period from several files merged in (advertiser,
        step) order, as one sort of all the rows would have them.

        Raises:
            DataError: a step of a trajectory in more than one file.
        """
        for p in sorted(self.files):
            parts = [pq.read_table(f).to_pandas() for f in self.files[p]]
            rows = parts[0]
            if len(parts) > 1:
                rows = pd.concat(parts, ignore_index=True)
                dup = rows.duplicated(["advertiser", "step"]).to_numpy()
                if dup.any():
                    i = int(np.flatnonzero(dup)[0])
                    raise DataError(f"{', '.join(map(str, files))}: period {p}, advertiser "
                                    f"{int(rows['advertiser'].iloc[i])}, step {int(rows['step'].iloc[i])} appears in "
                                    "more than one file")
                rows = rows.sort_values(["advertiser", "step"], kind="stable").reset_index(drop=True)
            yield rows


def import_auctionnet(files: Sequence[Path], out_dir: Path | str, cfg: Any, *, task_column: str = "",
                      task_map: str = "") -> None:
    """Importer ``auctionnet-trajectory``: files -> dataset (train: all periods but the last two;
    val: the second last; test: the last). Periods with the same index in two files are one period.
    Streams (see the module's docstring): memory of one period's rows.

    Args:
        task_column: the column that gives each trajectory's task (``--option task_column=NAME``);
            empty: ``taskIndex`` when the files have it, else none (a single-task dataset).
        task_map: ``VALUE:TASK,...`` mapping the values of ``task_column`` to tasks
            (``--option task_map=0:gmv,1:dir_gmv,2:cart``); empty: the column holds tasks itself.
    """
    if not files:
        raise DataError(f"{FORMAT}: no files given")
    given = TaskMapping.from_options(task_column, task_map)
    first: tuple[Path, TaskMapping] | None = None
    with tempfile.TemporaryDirectory(prefix="adray-vamo-import-") as tmp:
        spool = _Spool(Path(tmp))
        for f in files:
            path = Path(f)
            for out, states, mapping in _file_periods(path, given):
                if first is None:
                    first = (path, mapping)
                elif mapping != first[1]:
                    has, lacks = (path, first[0]) if mapping.column else (first[0], path)
                    raise DataError(f"{lacks}: no task column {TASK_COLUMN!r}, but {has} has one; give every file the "
                                    "column, or none (a single-task dataset), or name the mapping with --option "
                                    "task_column")
                spool.add(period_rows(out, states))
        assert first is not None  # every file has rows (iter_frames)
        source = f"{FORMAT}:" + ",".join(Path(f).name for f in files)
        write_periods(out_dir, sorted(spool.files), spool.periods(files), source=source,
                      seed=getattr(cfg, "seed", None),
                      meta={"origin": "import", "task_mapping": first[1].describe(),
                            "import_options": {"task_column": task_column, "task_map": task_map}})
