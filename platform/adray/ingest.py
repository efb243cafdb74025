"""Streaming ingest: a dataset's training split read with Ray Data, straight from its files.

What a Ray Train workload's rows go through on the streaming path (``TorchTrainer.train``):

* the driver opens the split's files (``Dataset.split_files``: local or ``s3://``) as a lazy
  ``ray.data.read_parquet`` of the columns the workload needs (:func:`read_split`), and hands it to
  Ray Train (``datasets={"train": ds}``); Ray Train gives every worker an equal share
  (``streaming_split(equal=True)``) through ``ray.train.get_dataset_shard``. The driver and the
  object store hold a few blocks in flight, never the split.
* every worker iterates its shard (:class:`StreamBatches`) with ``iter_torch_batches``: stored
  columns -> the workload's tensors by ``TorchSpec.stream_convert`` in Ray Data's prefetch threads
  (``prefetch_batches`` batches ahead), pinned and moved to the device when there is a GPU.
* the shuffle, stated: per epoch the files are read in a seeded order that changes every epoch
  (``FileShuffleConfig(seed, reseed_after_execution=True)``), and every worker draws its batches
  from a local shuffle buffer of ``shuffle_buffer`` rows seeded by (seed, epoch, rank). Rows are
  therefore mixed within a window of files and buffer, not globally: the generators and importers
  write rows in random order, which is what makes that enough (a dataset sorted by time or label
  needs a full ``random_shuffle`` first). ``shuffle=False``: files and rows in stored order, order
  preserved: the batches are those of the in-memory path without shuffling (same model).
* validation and test are read by rank 0 only, in the worker. A workload that evaluates batch by
  batch (``TorchSpec.eval_outputs`` / ``eval_metrics``) evaluates the whole split at every evaluation,
  streamed (:class:`EvalSplit`): memory holds the per-row outputs (a few numbers a row: predictions and
  labels), never the split's features. Otherwise rank 0 holds the first ``eval_max_rows`` rows of each
  as arrays (:func:`read_eval_split`; 500,000 when 0; the first rows in stored order are a random
  sample, as the rows are stored shuffled).

:func:`choose` picks the path: in memory up to ``memory_max_rows`` training rows (it starts faster;
see the note in ``notes/issue21_ingest.md`` for the measurement), streaming above; a config field
(``ingest``) forces either.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np

from adray.data import DataError, read_dataset
from adray.data.dataset import Dataset

Arrays = dict[str, np.ndarray]
Convert = Callable[[Arrays], Arrays]

READ_TASK_CPUS = 0.25
"""CPUs a Ray Data read task reserves: the Train workers hold the rest (on 2 CPUs, 2 workers and
whole-CPU read tasks would wait for each other forever)."""
OBJECT_STORE_BYTES_PER_WORKER = 256 * 2**20
"""Ray Data's object store budget per Train worker: about two blocks (128 MiB at most each) in
flight per worker. Without it Ray Data reads ahead until its share of the object store is full
(measured: peak PSS 3.7 GB at 1M rows, 6.3 GB at 10M rows, 2 workers); the plasma pages it touched
stay resident, so the read-ahead is what the process tree's peak grows with."""
EVAL_ARRAY_ROWS = 500_000
"""Rows of validation / test held as arrays on the streaming path when the workload cannot evaluate
batch by batch (and ``eval_max_rows`` is 0)."""
READ_BLOCK_BYTES = 16 * 2**20
"""Ray Data's target block size for the training read (its default: 128 MiB). With the scanner's
read-ahead below, what a read task holds decoded at once; measured with
``benchmarks/data_scale.py --rows 1000000,50000000 --paths stream --steps 200`` (2 workers): the
read processes' peak PSS 1.5-1.8 GB at 50M rows with the defaults, 1.4 GB with these two settings (0.8-0.9
GB with the streamed evaluation beside them); the whole tree 5,283 MB -> 4,632 MB at 50M rows."""
READ_TASK_ENV = {"RAY_DATA_ARROW_SCANNER_BATCH_READAHEAD": "1"}
"""The read tasks' environment: pyarrow's scanner reads one batch ahead, not Ray Data's default 8
(8 x 131,072 rows is a whole 1M-row part file decoded ahead)."""
FOOTER_ACTORS_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
FOOTER_ACTORS = 2
"""Actors that read the part files' footers when an epoch's read lists the split (Ray Data's default:
32, each a ~100 MB process, started every epoch). Measured at 400M rows (328 part files, 2 workers,
300 steps): the footer readers were 3,398 MB of the tree's 6,446 MB peak with the default. A user's
own ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS`` wins."""
WORKERS_PER_READER = 4
"""Train workers one concurrent read task feeds (:func:`readers_for`): a task decodes on the order of
1M rows/s, a CPU worker trains 5-10k. Each concurrent read task is a process holding its blocks:
one per worker (the first choice) put the tree's peak at 4,482 MB at 50M rows against 3,626 MB at 1M
(1.24x); one for both workers, 4,049 MB against 3,637 MB (1.11x), at the same steady samples/s within
the machine's noise (``benchmarks/data_scale.py --rows 1000000,50000000 --paths stream --steps 200``)."""
DATA_RESERVE_CPUS = 1.0
"""CPUs kept out of the Train workers' reservation on the streaming path: Ray Data's file listing task
takes one whole CPU, then the read tasks share it."""


@dataclasses.dataclass(frozen=True)
class IngestOptions:
    """How a Ray Train workload reads its training split (the ``ingest*`` config fields)."""

    mode: Literal["auto", "memory", "stream"] = "auto"
    memory_max_rows: int = 1_000_000
    shuffle: bool = True
    shuffle_buffer: int = 0
    """Rows of the local shuffle buffer; 0: 8 batches' worth."""
    prefetch_batches: int = 2
    eval_max_rows: int = 0
    """Rows of validation / test rank 0 evaluates on the streaming path; 0: the whole split when the
    workload evaluates batch by batch, else :data:`EVAL_ARRAY_ROWS`."""
    readers: int = 0
    """Concurrent read tasks of the training read; 0: :func:`readers_for` the worker count."""

    @classmethod
    def of(cls, cfg: Any) -> IngestOptions:
        """The options of a config; a workload without ``ingest*`` fields gets the defaults."""
        d = cls()
        return cls(mode=getattr(cfg, "ingest", d.mode),
                   memory_max_rows=getattr(cfg, "ingest_memory_max_rows", d.memory_max_rows),
                   shuffle=getattr(cfg, "ingest_shuffle", d.shuffle),
                   shuffle_buffer=getattr(cfg, "ingest_shuffle_buffer", d.shuffle_buffer),
                   prefetch_batches=getattr(cfg, "ingest_prefetch_batches", d.prefetch_batches),
                   eval_max_rows=getattr(cfg, "ingest_eval_max_rows", d.eval_max_rows),
                   readers=getattr(cfg, "ingest_readers", d.readers))


def choose(opts: IngestOptions, train_rows: int, streamable: bool) -> tuple[Literal["memory", "stream"], str]:
    """``(path, why)``: ``"memory"`` or ``"stream"`` for a training split of ``train_rows`` rows.

    Raises:
        ValueError: ``stream`` asked for a workload or config whose rows cannot stream
            (``TorchSpec.can_stream``).
    """
    if opts.mode == "stream":
        if not streamable:
            raise ValueError("ingest=stream: this workload's rows cannot be streamed with this config (its "
                             "TorchSpec has no stream_convert, or the config reads whole splits); use "
                             "ingest=memory or ingest=auto")
        return "stream", "ingest=stream"
    if opts.mode == "memory" or not streamable:
        return "memory", "ingest=memory" if opts.mode == "memory" else "the workload reads its splits whole"
    if train_rows <= opts.memory_max_rows:
        return "memory", f"{train_rows} training rows <= ingest_memory_max_rows={opts.memory_max_rows}"
    return "stream", f"{train_rows} training rows > ingest_memory_max_rows={opts.memory_max_rows}"


def where(data: Any) -> str:
    """A dataset's address for messages."""
    return data.uri if isinstance(data, Dataset) else str(data)


def split_rows(data: Any, split: str) -> int:
    """Rows of ``split`` as the manifest states them (no file is read)."""
    return int(read_dataset(data, check_files=False).manifest["splits"][split]["rows"])


def read_split(data: Any, split: str, columns: list[str] | None, *, seed: int, shuffle: bool,
               readers: int = 1) -> Any:
    """A lazy ``ray.data.Dataset`` of ``split``'s files (only ``columns``), read by at most ``readers``
    concurrent tasks (:func:`readers_for`: a task decodes far faster than a worker trains); with
    ``shuffle``, the files in a seeded order that changes with every execution (epoch)."""
    import ray.data
    from ray.data import FileShuffleConfig

    fs, paths = read_dataset(data).split_files(split)
    ctx = ray.data.DataContext.get_current()
    block, ctx.target_max_block_size = ctx.target_max_block_size, READ_BLOCK_BYTES  # the Dataset keeps a copy
    actors = os.environ.get(FOOTER_ACTORS_ENV)
    os.environ[FOOTER_ACTORS_ENV] = actors or str(FOOTER_ACTORS)  # read once, by the indexer made here
    try:
        return ray.data.read_parquet(
            paths, filesystem=fs, columns=columns,
            shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True) if shuffle and len(paths) > 1 else None,
            ray_remote_args={"num_cpus": READ_TASK_CPUS, "runtime_env": {"env_vars": READ_TASK_ENV}},
            concurrency=max(1, readers),
        )
    finally:
        ctx.target_max_block_size = block
        if actors is None:
            os.environ.pop(FOOTER_ACTORS_ENV, None)


def readers_for(workers: int, asked: int = 0) -> int:
    """Concurrent read tasks for ``workers`` Train workers: ``asked`` (``ingest_readers``) when set,
    else one per :data:`WORKERS_PER_READER`."""
    return asked if asked > 0 else max(1, -(-workers // WORKERS_PER_READER))


def execution_options(shuffle: bool, workers: int) -> Any:
    """Ray Data's options for the training read: order kept when not shuffling; the object store
    budget bounded (``OBJECT_STORE_BYTES_PER_WORKER`` per worker), whatever the dataset's size."""
    from ray.data import ExecutionOptions, ExecutionResources

    return ExecutionOptions(preserve_order=not shuffle, resource_limits=ExecutionResources(
        object_store_memory=OBJECT_STORE_BYTES_PER_WORKER * max(1, workers)))


def data_config(shuffle: bool, workers: int) -> Any:
    """Ray Train's ``DataConfig``: only ``train`` split across workers, :func:`execution_options`."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"], execution_options={"train": execution_options(shuffle, workers)})


def _collate_cls() -> type:
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        """Stored columns -> the workload's tensors (runs in Ray Data's prefetch threads)."""

        def __init__(self, convert: Convert) -> None:
            self.convert = convert

        def __call__(self, batch: Arrays) -> dict[str, Any]:
            import torch

            return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.convert(batch).items()}

    return Collate


class StreamBatches:
    """One rank's batches read from a Ray Data iterator (``get_dataset_shard``): a ``Batches`` of
    :func:`adray.epochs.run_epochs`.

    Args:
        shard: the rank's ``DataIterator`` (every rank holds ``rows // world`` rows).
        convert: a batch of stored columns -> the workload's arrays (vectorised).
        rows: rows of the whole split (manifest); ``steps`` follows as in the in-memory path.
        on_error: turns an exception raised while reading into the error to raise (naming the file).
    """

    def __init__(self, shard: Any, convert: Convert, *, rows: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, opts: IngestOptions = IngestOptions(), device: Any = "cpu",
                 on_error: Callable[[BaseException], BaseException] | None = None) -> None:
        self.shard, self.convert, self.seed, self.rank, self.opts = shard, convert, seed, rank, opts
        self.device, self.on_error = device, on_error
        self.per_worker = max(1, batch_size // world)
        self.steps = (rows // world) // self.per_worker
        if self.steps < 1:
            raise DataError(f"{rows} training rows: fewer than one batch of {self.per_worker} per worker "
                            f"on {world} worker(s); lower batch_size")
        self.rows_per_step = self.per_worker * world
        self.buffer = (opts.shuffle_buffer or 8 * self.per_worker) if opts.shuffle else 0

    def epoch(self, epoch: int) -> Iterable[dict[str, Any]]:
        import torch

        device = torch.device(self.device)
        it = self.shard.iter_torch_batches(
            batch_size=self.per_worker, collate_fn=_collate_cls()(self.convert), drop_last=True,
            prefetch_batches=self.opts.prefetch_batches, device=device, pin_memory=device.type == "cuda",
            local_shuffle_buffer_size=max(self.buffer, self.per_worker) if self.buffer else None,
            local_shuffle_seed=(self.seed * 100_003 + epoch * 1_009 + self.rank) if self.buffer else None,
        )
        return self._guarded(it)

    def _guarded(self, it: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            done = 0
            for batch in it:
                if done < self.steps:  # equal shards: never more; the rest is drained, not trained
                    done += 1
                    yield batch
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a read task's error, re-raised naming the file
            if self.on_error is None:
                raise
            raise self.on_error(exc) from exc


def locate_bad_file(data: Any, split: str, columns: list[str] | None, exc: BaseException) -> BaseException:
    """The error to raise when reading ``split`` failed mid-epoch with ``exc`` (a Ray Data read task's
    error does not name the file): the split is read again file by file, row group by row group
    (``Dataset.iter_batches``, bounded memory) until the failing file raises a DataError naming it.
    Only on this error path; a whole pass over the split at worst."""
    reason = " ".join(str(exc).split())[-300:]
    try:
        for _ in read_dataset(data).iter_batches(split, columns=columns):
            pass
    except DataError as found:
        return DataError(f"{found} (while training: {type(exc).__name__})")
    return DataError(f"reading split {split!r} of {where(data)} failed while training and every file reads on its own "
                     f"again (a transient storage error?): {reason}")


def eval_batches(data: Any, split: str, columns: list[str] | None, convert: Convert, max_rows: int,
                  ) -> Iterator[Arrays]:
    """The first ``max_rows`` rows of ``split`` (0: all), row group by row group, as the workload's arrays."""
    n = 0
    for rb in read_dataset(data).iter_batches(split, columns=columns):
        take = rb.num_rows if not max_rows else min(rb.num_rows, max_rows - n)
        yield convert({name: rb.column(i).to_numpy(zero_copy_only=False)[:take]
                       for i, name in enumerate(rb.schema.names)})
        n += take
        if max_rows and n >= max_rows:
            return


def read_eval_split(data: Any, split: str, columns: list[str] | None, convert: Convert, max_rows: int) -> Arrays:
    """The first ``max_rows`` rows of ``split`` as the workload's arrays, read here (a worker), batch
    by batch: what rank 0 evaluates on the streaming path when the workload needs arrays."""
    parts = list(eval_batches(data, split, columns, convert, max_rows or EVAL_ARRAY_ROWS))
    if not parts:
        raise DataError(f"{where(data)}: split {split!r} is empty; expected at least one row")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """A validation or test split evaluated batch by batch, read again at every evaluation (rank 0 on
    the streaming path): see :func:`evaluate`."""

    data: Any
    split: str
    columns: list[str] | None
    convert: Convert
    max_rows: int = 0
    """0: every row."""

    def batches(self) -> Iterator[Arrays]:
        return eval_batches(self.data, self.split, self.columns, self.convert, self.max_rows)


def evaluate(spec: Any, model: Any, split: Arrays | EvalSplit, cfg: Any) -> dict[str, float]:
    """``spec``'s metrics of ``model`` (eval mode, no grad) on one split: arrays through
    ``spec.evaluate``; an :class:`EvalSplit` batch by batch through ``spec.eval_outputs`` (per-row
    outputs, concatenated) and ``spec.eval_metrics`` (the same numbers ``evaluate`` gives on the
    same rows as arrays).

    Raises:
        DataError: the split has no row.
    """
    if not isinstance(split, EvalSplit):
        return spec.evaluate(model, split, cfg)
    outs = [spec.eval_outputs(model, batch, cfg) for batch in split.batches()]
    if not outs:
        raise DataError(f"{where(split.data)}: split {split.split!r} is empty; expected at least one row")
    return spec.eval_metrics({k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, cfg)
