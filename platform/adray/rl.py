"""RLlib harness: logged transitions streamed from Parquet, algorithm build/train/save/restore helpers.

Generic (no workload names): an RLlib workload's ``fit`` builds its ``AlgorithmConfig``, passes it
through :func:`small_machine`, builds it, and drives it with :func:`train_iterations`; its offline
``training_step`` draws minibatches from :func:`transition_sampler` over the split's Parquet files
(``Dataset.split_files``; a :class:`StreamSampler`, in memory for small splits) and hands them to the learner group as a :class:`MultiAgentBatch`
(:func:`learner_batch`). The inference RLModule is exported with :func:`export_module` and loaded
alone (no Algorithm, no cluster) with :func:`load_module` -- that is what Serve loads.

**The data path: a streaming sampler over Parquet row groups, not RLlib's OfflineData.**
:class:`StreamSampler` holds a bounded shuffle buffer (``buffer_rows``, in blocks of at most
``block_rows`` rows read from row groups in a seeded random order each epoch); a minibatch is drawn
without replacement from the pooled buffer (every row once per epoch), and a block is replaced by
the next one from the stream when it is used up. Memory is the buffer's, whatever the dataset's
size; a dataset that fits the buffer is read once and kept (no I/O after the first epoch).
:func:`scan` reads a split block by block (held-out sets, statistics).

Why not RLlib's own offline path (measured again for issue 21, Ray 2.60, this 2-CPU machine under
the other sessions' load, crossdqn transitions of 110-float observations; ``python
benchmarks/rl_data_scale.py --rllib-offline``): ``config.offline_data(input_=files,
map_batches_kwargs={"concurrency": 1, "num_cpus": 0.5})`` with BC as the vehicle (OfflineData ->
Ray Data ``read_parquet`` -> ``map_batches(OfflinePreLearner)``: rows -> episodes -> learner
connector) runs, but its OfflinePreLearner turns ~3,500 rows/s into batches on one CPU. With
RLlib's default ``materialize_mapped_data=True`` it maps the whole dataset into the object store
before the first batch: 1M rows, first iteration 266 s, peak PSS 3.6 GB (200k rows: 75 s, 2.5 GB),
after which it serves ~38-74k samples/s from memory -- the whole-dataset copy issue 21 removes.
Streaming (``materialize_mapped_data=False``, 200k rows): first iteration 93 s, and each new epoch
stalls for another ~67 s: ~1.6-2.9k samples/s, and the process hung on exit after ``algo.stop()``.
Ours decodes ~385k rows/s of Parquet per CPU and samples 0.49M rows/s from its buffer, in a
read-ahead thread; Cross DQN training (smoke network) at 12.7k samples/s on 1M rows (in-memory
8.7k) and 11.4k on 10M, peak PSS of the whole training tree 1.47 GB at both sizes (in-memory: 2.27
GB at 1M; figures and commands: ``/work/notes/issue21_rl.md``). The Algorithm, RLModule and Learner stay real RLlib
classes; only the data path is ours.

Small splits (at most ``buffer_rows`` rows) are sampled in memory (:func:`transition_sampler`):
within the same memory bound the in-memory sampler draws 2.0M rows/s against the stream's 0.49M
(CPU time, 200k crossdqn rows), and such datasets -- every smoke and default config -- train
exactly as before. Both draw rows uniformly (with replacement / once an epoch): statistically the
same training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import DataError

Files = tuple[Any, list[str]]
"""``(pyarrow filesystem, [Parquet paths])``: what ``Dataset.split_files(split)`` returns."""
Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
BLOCK_ROWS = 8192
"""Rows per block read from a row group (``ParquetFile.iter_batches`` batch size)."""
BUFFER_ROWS = 1 << 18
"""Default bound of a :class:`StreamSampler`'s buffer (262,144 rows: ~250 MB at ~1 KB a row)."""


IN_MEMORY_MAX_ROWS: int | None = None
"""Splits of at most this many rows (in the files) are sampled in memory (:class:`TransitionSampler`,
uniform with replacement, the split read whole) instead of streamed; None = the sampler's
``buffer_rows``, so memory is bounded by the buffer either way (module docstring: why)."""


def as_files(data: Path | str | Files) -> Files:
    """``Files`` of a split: as given, or a Parquet file or a folder of them (``*.parquet``, sorted),
    local or a ``pyarrow.fs`` URI."""
    if isinstance(data, tuple):
        return data
    import pyarrow.fs as pafs

    text = str(data)
    fs, path = pafs.FileSystem.from_uri(text) if "://" in text else (pafs.LocalFileSystem(), str(Path(text).absolute()))
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        return fs, sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
    return fs, [path]


def transition_sampler(files: Files, columns: Sequence[str], transform: Transform | None = None, *,
                       seed: int = 0, buffer_rows: int = BUFFER_ROWS) -> StreamSampler | TransitionSampler:
    """The sampler of a split: :class:`TransitionSampler` over the whole split when it has at most
    :data:`IN_MEMORY_MAX_ROWS` rows (default: ``buffer_rows``), else :class:`StreamSampler`."""
    rows = sum(g.rows for g in open_split(files, columns))
    if rows > (buffer_rows if IN_MEMORY_MAX_ROWS is None else IN_MEMORY_MAX_ROWS):
        return StreamSampler(files, columns, transform, seed=seed, buffer_rows=buffer_rows)
    blocks = [b for b in scan(files, columns, transform) if len(next(iter(b.values())))]
    if not blocks:
        raise DataError(f"{files[1][0]}: no row to train on ({rows} row(s) in the files, none left after filtering)")
    return TransitionSampler({c: np.concatenate([b[c] for b in blocks]) for c in blocks[0]}, seed=seed)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal types; list types compare by their values (writers name the list's item differently)."""
    if _is_list(a) and _is_list(b):
        return _same_type(a.value_type, b.value_type)
    return a == b


def _to_numpy(col: pa.Array | pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    """One column as numpy; a list column (e.g. ``obs``) as a 2-D array (rows, width)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not _is_list(col.type):
        return col.to_numpy(zero_copy_only=False)
    if col.null_count:
        raise DataError(f"{where}: field {name!r}: {col.null_count} null row(s); expected a list in every row")
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(f"{where}: field {name!r} row {row}: {lengths[row]} values, row 0 has {lengths[0]} "
                        "(lists of unequal length); expected lists of one fixed size")
    width = int(lengths[0]) if len(lengths) else 0
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)


def read_transitions(path: Path | str, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of one whole Parquet file as numpy; list columns (e.g. ``obs``) become 2-D arrays.
    Small files only (it holds them whole): training streams with :class:`StreamSampler`.

    Raises:
        DataError: missing file/columns, or list rows of unequal length.
    """
    path = Path(path)
    try:
        table = pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"{path}: cannot read columns {list(columns)} ({exc})") from None
    return {name: _to_numpy(table.column(name), name, str(path)) for name in columns}


@dataclasses.dataclass(frozen=True)
class RowGroup:
    """One row group of one file of a split: what the stream reads (in blocks)."""

    file: int
    """Index in the split's file list."""
    group: int
    rows: int


def open_split(files: Files, columns: Sequence[str]) -> list[RowGroup]:
    """The row groups of a split's files, after checking every file has ``columns`` with the first
    file's types (file metadata only: no data is read).

    Raises:
        DataError: no file, a file that cannot be opened, a missing field, or a field whose type
            differs from the first file's (naming the file and the field).
    """
    fs, paths = files
    if not paths:
        raise DataError("dataset split: no Parquet file; expected at least one")
    first: dict[str, pa.DataType] = {}
    groups = []
    for i, path in enumerate(paths):
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from None
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(f"{path}: missing field(s) {missing}; expected {list(columns)} (found {schema.names[:20]})")
        for c in columns:
            t = schema.field(c).type
            if c not in first:
                first[c] = t
            elif not _same_type(t, first[c]):
                raise DataError(f"{path}: field {c!r} has type {t}, but {paths[0]} has {first[c]}; every file of "
                                "a split must have one schema (regenerate or re-import the odd file)")
        groups += [RowGroup(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                   if meta.row_group(g).num_rows]
    return groups


def read_group(files: Files, group: RowGroup, columns: Sequence[str], block_rows: int = BLOCK_ROWS,
               ) -> Iterator[dict[str, np.ndarray]]:
    """Blocks (dicts of numpy columns, at most ``block_rows`` rows) of one row group.

    Raises:
        DataError: the row group cannot be decoded, or a list column has rows of unequal length
            (naming the file, the row group and the field).
    """
    fs, paths = files
    path = paths[group.file]
    where = _where(files, group)
    try:
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=block_rows, row_groups=[group.group],
                                                        columns=list(columns), use_threads=False):
                yield {c: _to_numpy(batch.column(c), c, where) for c in columns}
    except (OSError, pa.ArrowException, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: cannot be decoded ({' '.join(str(exc).split())[:200]}); the file is damaged: "
                        "regenerate or re-import the dataset") from None


def _where(files: Files, group: RowGroup) -> str:
    return f"{files[1][group.file]}: row group {group.group}"


def _apply(transform: Transform | None, block: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """``transform(block)``; its DataError (e.g. a value check) prefixed with the file and row group."""
    if transform is None:
        return block
    try:
        return transform(block)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def scan(files: Files, columns: Sequence[str], transform: Transform | None = None,
         block_rows: int = BLOCK_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """A split's rows in file order, block by block (``transform`` applied to each): bounded memory."""
    for group in open_split(files, columns):
        for block in read_group(files, group, columns, block_rows):
            yield _apply(transform, block, _where(files, group))


class StreamSampler:
    """Minibatches of logged rows from a split's Parquet files through a bounded shuffle buffer.

    Each epoch visits the row groups in a seeded random order and reads each in blocks of at most
    ``block_rows`` rows (``transform`` turns a block into the training columns: filters rows, casts,
    builds rewards). The buffer holds at most ``buffer_rows // block_rows`` blocks; ``sample(n)``
    draws n rows without replacement from all the rows the buffer still holds (a multivariate
    hypergeometric draw of how many from each block, then each block's rows in its own random
    order), and a used-up block is replaced by the next one of the stream. So every row is drawn
    exactly once per epoch, and rows of up to ``buffer_rows // block_rows`` row groups mix in one
    minibatch. A split whose rows all fit the buffer is read once and kept. The next block is read
    and decoded in a thread while the learner works (Parquet decoding releases the GIL); the order
    of the stream has its own seeded generator, so the draws stay deterministic. Same interface as
    :class:`TransitionSampler` (``sample``, ``size``).
    """

    def __init__(self, files: Files, columns: Sequence[str], transform: Transform | None = None, *,
                 seed: int = 0, buffer_rows: int = BUFFER_ROWS, block_rows: int = BLOCK_ROWS) -> None:
        if buffer_rows < 1 or block_rows < 1:
            raise ValueError(f"buffer_rows={buffer_rows}, block_rows={block_rows}: expected >= 1")
        self.files, self.columns, self.transform = files, list(columns), transform
        self.groups = open_split(files, self.columns)
        self.file_rows = sum(g.rows for g in self.groups)
        """Rows in the files (before ``transform`` filters any)."""
        self.block_rows = min(block_rows, buffer_rows)
        self.slots = max(1, buffer_rows // self.block_rows)
        self.rng = np.random.default_rng(seed)
        self._order_rng = np.random.default_rng([seed, 1])  # the stream's (read ahead in a thread)
        self.epoch = 0
        self.rows_read = 0
        self._cached: list[dict[str, np.ndarray]] | None = None  # the whole split, when it fits the buffer
        self._keep = self.file_rows <= self.slots * self.block_rows
        self._stream = self._blocks()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="adray-rl-read")
        self._next: Future | None = None  # the stream's next block, decoded while the learner works
        self._pending: tuple[int, dict[str, np.ndarray]] | None = None
        self._buffer_epoch = 0
        self._buffer: list[tuple[dict[str, np.ndarray], np.ndarray]] = []  # (block, its rows not yet drawn)
        self._fill()
        if not self._buffer:
            raise DataError(f"{files[1][0]}{' ...' if len(files[1]) > 1 else ''}: no row to train on "
                            f"({self.file_rows} row(s) in the files, none left after filtering)")

    @property
    def size(self) -> int:
        """Rows the buffer holds now (bounded by ``slots * block_rows``)."""
        return sum(len(b[next(iter(b))]) for b, _ in self._buffer)

    def _read_epoch(self) -> Iterator[dict[str, np.ndarray]]:
        for i in self._order_rng.permutation(len(self.groups)):
            group = self.groups[i]
            for block in read_group(self.files, group, self.columns, self.block_rows):
                self.rows_read += len(block[self.columns[0]])
                block = _apply(self.transform, block, _where(self.files, group))
                if len(next(iter(block.values()))):
                    yield block

    def _blocks(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The endless stream of (epoch, block), epoch after epoch (from the cache when it fits)."""
        while True:
            if self._cached is not None:
                order = self._order_rng.permutation(len(self._cached))
                yield from ((self.epoch, self._cached[i]) for i in order)
            else:
                kept = []
                for block in self._read_epoch():
                    kept.append(block)
                    yield self.epoch, block
                    if not self._keep:
                        kept = [block]  # only whether the epoch had a row
                if not kept:
                    return  # every row filtered out: no stream
                self._cached = kept if self._keep else None
            self.epoch += 1

    def _fill(self) -> None:
        """Top the buffer up with the stream's next blocks; a new epoch's only once the buffer holds
        none of the last epoch's (so every row is drawn exactly once an epoch)."""
        while len(self._buffer) < self.slots:
            if self._pending is None:
                nxt = self._next or self._reader.submit(next, self._stream, None)
                self._pending = nxt.result()  # a DataError of the read is raised here
                self._next = self._reader.submit(next, self._stream, None) if self._pending else None
                if self._pending is None:
                    return
            epoch, block = self._pending
            if self._buffer and epoch != self._buffer_epoch:
                return
            self._buffer_epoch, self._pending = epoch, None
            self._buffer.append((block, self.rng.permutation(len(next(iter(block.values()))))))

    def close(self) -> None:
        """Stop reading ahead (the learner's ``cleanup``); the sampler is not used after."""
        self._reader.shutdown(wait=True, cancel_futures=True)

    def sample(self, n: int) -> dict[str, np.ndarray]:
        """``n`` rows (each column (n, ...)), without replacement within an epoch, in random order."""
        parts: list[dict[str, np.ndarray]] = []
        need = n
        while need:
            left = np.array([len(rest) for _, rest in self._buffer])
            take = self.rng.multivariate_hypergeometric(left, min(need, int(left.sum())))
            for k in np.flatnonzero(take):
                block, rest = self._buffer[k]
                idx, self._buffer[k] = rest[:take[k]], (block, rest[take[k]:])
                parts.append({c: v[idx] for c, v in block.items()})
            need -= int(take.sum())
            self._buffer = [(b, rest) for b, rest in self._buffer if len(rest)]
            self._fill()
        out = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
        order = self.rng.permutation(n)  # mix the blocks' rows across the minibatches of one call
        return {c: v[order] for c, v in out.items()}


class TransitionSampler:
    """Uniform minibatches (with replacement) from in-memory transition columns."""

    def __init__(self, columns: dict[str, np.ndarray], seed: int = 0) -> None:
        sizes = {k: len(v) for k, v in columns.items()}
        if len(set(sizes.values())) != 1 or not next(iter(sizes.values()), 0):
            raise DataError(f"transitions: columns must be non-empty and of equal length, got {sizes}")
        self.columns = columns
        self.size = next(iter(sizes.values()))
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, size=n)
        return {k: v[idx] for k, v in self.columns.items()}


def split_updates(n_updates: int, minibatch_size: int, target_update_freq: int) -> list[int]:
    """Minibatches per ``learner_group.update`` call for one iteration of ``n_updates`` minibatches.

    One call takes many minibatches (RLlib splits its batch by ``minibatch_size``), which saves the
    per-call work (batch conversion, metrics reduce); a DQN learner checks its target-network sync
    once per call, so each call covers at most ``target_update_freq`` transitions and syncs still
    happen by count. E.g. (20, 128, 2000) -> [15, 5].
    """
    per_call = max(1, min(n_updates, target_update_freq // minibatch_size))
    return [per_call] * (n_updates // per_call) + ([n_updates % per_call] if n_updates % per_call else [])


def learner_batch(columns: dict[str, np.ndarray], module_id: str | None = None) -> Any:
    """A numpy minibatch as the ``MultiAgentBatch`` that ``LearnerGroup.update(batch=...)`` takes."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    n = len(next(iter(columns.values())))
    return MultiAgentBatch({module_id or DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=n)


def small_machine(config: Any, offline: bool = True) -> Any:
    """Pin an AlgorithmConfig for a small or shared machine: everything in the driver process.

    No remote EnvRunners or Learners (the local ones run in the driver), and for offline training
    no minimum of sampled timesteps per iteration (one ``training_step`` per ``train()``).
    """
    config = config.env_runners(num_env_runners=0).learners(num_learners=0)
    if offline:
        config = config.reporting(min_sample_timesteps_per_iteration=0, min_time_s_per_iteration=0)
    return config


def train_iterations(
    algo: Any,
    iterations: int,
    summarize: Callable[[dict[str, Any]], dict[str, float]],
    report: Callable[[dict[str, float]], None] = lambda m: None,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Call ``algo.train()`` ``iterations`` times; report ``summarize(result)`` + ``iter_time_s``."""
    history = []
    for i in range(iterations):
        start = time.perf_counter()
        result = algo.train()
        metrics = {"iteration": float(i + 1), "iter_time_s": time.perf_counter() - start,
                   **summarize(result)}
        history.append(metrics)
        report(metrics)
        if progress:
            print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
    return history


def learner_metrics(result: dict[str, Any], module_id: str | None = None) -> dict[str, float]:
    """Scalar learner metrics of one module from an ``Algorithm.train()`` result."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import LEARNER_RESULTS

    stats = result.get(LEARNER_RESULTS, {}).get(module_id or DEFAULT_MODULE_ID, {})
    out = {}
    for k, v in stats.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def export_module(algo: Any, out_dir: Path | str, module_id: str | None = None) -> Path:
    """Write the learner's RLModule (inference part only) as an RLlib module checkpoint."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    mid = module_id or DEFAULT_MODULE_ID
    state = algo.learner_group.get_state(components=f"learner/rl_module/{mid}")
    weights = state["learner"]["rl_module"][mid]
    spaces = algo.env_runner_group.get_spaces()
    spec = algo.config.get_rl_module_spec(spaces={mid: spaces[mid]}, inference_only=True)
    module = spec.build()
    module.set_state(weights)
    out = Path(out_dir)
    module.save_to_path(out)
    return out


def load_module(path: Path | str) -> Any:
    """The RLModule of an :func:`export_module` checkpoint, alone (no Algorithm, no Ray)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not an RLModule checkpoint directory")
    module = RLModule.from_checkpoint(path)
    module.eval()
    return module


def save_algorithm(algo: Any, path: Path | str) -> Path:
    """Full Algorithm checkpoint (learner, optimiser, target nets) for resuming training."""
    return Path(algo.save_to_path(Path(path).absolute()))


def restore_algorithm(path: Path | str) -> Any:
    from ray.rllib.algorithms.algorithm import Algorithm

    return Algorithm.from_checkpoint(Path(path).absolute())
