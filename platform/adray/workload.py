"""The contract between the platform and a workload (one model family).

A workload is one folder under ``workloads/`` whose ``__init__.py`` exposes ``WORKLOAD``, a
:class:`Workload`, plus one line in the explicit dict ``workloads.WORKLOADS`` (name -> module
path). The platform (cli, train, tune, evaluate, serving, registry) reaches a workload only through
:func:`get_workload` and calls only what the :class:`Workload` declares:

* ``config_cls``: its frozen config (a :class:`TrainConfig` subclass; unknown keys are errors);
* ``make_data`` / ``importers``: generators or simulators, and readers of real public formats.
  Generation is only ever explicit: ``adray data make``, or a config whose ``data`` is the literal
  ``generate`` (the dataset ``make_data`` builds from the config's ``generator_fields``, kept under
  ``$ADRAY_STORAGE/data/<workload>-<hash>``); any other ``data`` is a path that must hold a dataset;
* ``trainer``: ONE training entry (:class:`Trainer`) returning ONE result type
  (:class:`TrainResult`), whether it runs on Ray Train (``adray.train_torch.TorchTrainer``) or on
  RLlib (the workload's own trainer). The trainer names its loop-length field (``epochs``,
  ``iterations``): one report per loop step, which is what Tune's ASHA counts;
* ``load_model``: a published version directory -> the inference model;
* ``evaluate``: the paper's metrics of a model and of the workload's baselines;
* ``policy``: the serving policy (:class:`Policy`): the typed request and response of one
  decision and a batched ``decide``; the same class answers over HTTP and offline;
* ``headline``: the metric and trivial baseline of the contract suite's learning check;
* ``gate_data`` (optional): what ``adray models promote --gate ope`` needs to value a candidate
  version on the decision log: ``(candidate, serving, rows) -> GateData`` (:class:`GateData`),
  given both versions (:class:`GateModel`: inference model, config, meta, ref) and the log rows (a
  ``pyarrow.Table``) decided by the serving version. Rewards are the serving version's definition
  (:func:`same_section` refuses a candidate with another); the candidate's mass off the logging
  policy's support is counted. A workload without it cannot be gated (the command says so).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from adray.config import Config, check

# A split of a dataset as columns of equal first dimension: {"x_cat": (N, F) int64, "y": (N,) float32 ...}
Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Fields every workload config has. Workload configs subclass this (or :class:`EpochConfig`)."""

    data: str = ""
    """Dataset directory (Parquet + manifest.json; must exist). Empty: ``data/<workload>`` under
    the cwd. ``generate``: the dataset the workload's ``make_data`` builds from this config (made on
    first use, then reused; keyed by the config's generator fields)."""
    seed: int = 0
    """Seed for data order, initialisation and generators."""


@dataclasses.dataclass(frozen=True)
class EpochConfig(TrainConfig):
    """Fields of the epoch loop (``adray.epochs``) that Ray Train workloads share."""

    epochs: int = 5
    """Passes over the training split."""
    batch_size: int = 1024
    """Global batch size (split evenly across Ray Train workers)."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0 disables clipping."""

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs={self.epochs}: expected >= 1")
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: expected >= 1")
        check(self.lr > 0, f"lr={self.lr}: expected > 0")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay}: expected >= 0")
        check(self.grad_clip >= 0, f"grad_clip={self.grad_clip}: expected >= 0")


# ----------------------------------------------------------------------------- training


class Reporter:
    """Where a trainer's per-step metrics go. The default prints nothing.

    ``report`` is called in the process that runs ``Trainer.train`` (RLlib trainers call it once per
    iteration); ``train_callbacks`` are Ray Train callbacks that deliver the reports of Ray Train
    workers (which run in other processes) to the same place. Tune's reporter forwards both.
    """

    def report(self, metrics: Mapping[str, float]) -> None:
        pass

    def train_callbacks(self) -> list[Any]:
        return []


@dataclasses.dataclass(frozen=True)
class TrainContext:
    """Where a run works and what the user asked for."""

    data_dir: Path | str
    """The dataset (exists: the platform checked it before calling the trainer): a local path, or a
    storage URI string (``s3://bucket/prefix?...``) that every node reads. Open it with
    ``adray.data.read_dataset`` (never ``Path(...)`` arithmetic: an object store has no local path)."""
    run_dir: Path
    """Local scratch directory of this run; the same run (same name) finds it again to resume."""
    run_name: str
    """Stable name of the run (workload, config, dataset hash, workers): rerunning resumes."""
    storage: str
    """URI (local path, ``s3://...``) under which Ray Train keeps this run's checkpoints
    (``RunConfig(storage_path=storage, name=run_name)``): every node of a cluster sees it."""
    num_workers: int = 1
    use_gpu: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    """Mixed precision of the forward pass (bf16 autocast; weights and optimiser stay fp32)."""
    cpus_per_worker: float | None = None
    """Ray Train workers' CPU reservation; None = sized to the cluster."""
    placement: Literal["pack", "spread", "strict_spread"] = "pack"
    """Where the Ray Train workers go (``ScalingConfig.placement_strategy``): ``pack`` on as few
    nodes as possible (Ray's default), ``spread`` over the nodes where they fit, ``strict_spread``
    each on its own node (fails fast when the cluster has fewer nodes with room). Trainers that run
    one learner in the driver (the RLlib workloads) have nothing to place."""
    progress: bool = False
    reporter: Reporter = dataclasses.field(default_factory=Reporter)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What every trainer returns."""

    metrics: dict[str, float]
    """val_* of the selected model, test_* where the trainer evaluates a test split, throughput."""
    model_dir: Path
    """A local directory holding everything ``Workload.load_model`` needs; the platform writes the
    resolved config and ``meta`` into it and publishes it."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """JSON-able facts the loader needs (feature map, layouts); saved as meta.json."""
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """One row per loop step (epoch or iteration)."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


class Trainer(Protocol):
    """One training entry of a workload."""

    loop_field: str
    """Config field counting the loop steps (one report each): ``epochs``, ``iterations``."""
    objective: str
    """Validation metric (reported as ``val_<objective>``) that picks the best step and that sweeps
    optimise by default."""
    mode: Literal["max", "min"]

    def train(self, cfg: Any, ctx: TrainContext) -> TrainResult: ...

    def salvage(self, cfg: Any, ctx: TrainContext, checkpoint: str | None) -> TrainResult | None:
        """The model of an interrupted run (a trial stopped by ASHA) from its last reported
        checkpoint, or None when the trainer keeps none."""
        ...


# ----------------------------------------------------------------------------- serving


class Policy(abc.ABC):
    """A workload's inference policy: loaded once (per replica), decides batches of requests.

    ``decide`` takes plain dicts that validated against :meth:`request_schema` and returns plain
    dicts that validate against :meth:`response_schema`, one per request, in order. Serve calls it
    with one request at a time by default (so an answer is bit-identical to offline inference of
    the same request, ``adray.serving.decide_offline``) or with a micro-batch when concatenation is
    asked for. Schemas may depend on the model's meta (e.g. its FeatureMap).
    """

    route: ClassVar[str]
    """HTTP route of one decision: ``POST /v1/<route>``."""
    summary: ClassVar[str] = ""

    def __init__(self, model: Any, cfg: Any, meta: dict[str, Any], ref: str) -> None:
        self.model, self.cfg, self.meta, self.ref = model, cfg, meta, ref

    @classmethod
    @abc.abstractmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[Any]:
        """Pydantic model of one request (``max_items`` bounds any list of candidates)."""

    @classmethod
    @abc.abstractmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[Any]:
        """Pydantic model of one answer."""

    @abc.abstractmethod
    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers to ``requests`` (validated dicts), in order."""

    @classmethod
    @abc.abstractmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` valid requests drawn from the dataset (contract tests, docs, load benchmarks)."""


def epsilon_greedy(greedy: int, request_id: str | None, size: int, epsilon: float, salt: str = "",
                   rng: np.random.Generator | None = None) -> tuple[int, float]:
    """The ε-greedy serving rule over ``size`` actions: (action, its propensity).

    A share ε of requests gets an action drawn uniformly, the others ``greedy``; the propensity is
    (1-ε)·1[a = greedy] + ε/size (1.0 at ε = 0), what the decision log needs for off-policy
    learning. The draw is a stable hash of ``salt`` + ``request_id``, so an answer is reproducible and
    two stages with different salts do not explore on the same requests; without a request id it
    comes from ``rng`` when one is given.
    """
    a = greedy
    if epsilon > 0:
        if request_id or rng is None:
            rid = request_id or ""
            if zlib.crc32(f"{salt}{rid}".encode()) / 2**32 < epsilon:
                a = zlib.crc32(f"{salt}a:{rid}".encode()) % size
        elif rng.random() < epsilon:
            a = int(rng.integers(size))
    return a, (1 - epsilon) * float(a == greedy) + epsilon / size


@dataclasses.dataclass(frozen=True)
class Headline:
    """The contract suite's learning check: at smoke scale, the trained model's ``metric`` in
    ``Workload.evaluate``'s table beats the trivial ``baseline`` row (in ``mode``)."""

    metric: str
    baseline: str
    mode: Literal["max", "min"] = "max"


@dataclasses.dataclass(frozen=True)
class GateModel:
    """One version as the promotion gate hands it to a workload: its inference model, config, meta
    and reference (``name@vNNNN``)."""

    model: Any
    cfg: Any
    meta: dict[str, Any]
    ref: str


class GateMismatch(ValueError):
    """The candidate cannot be valued on the serving version's yardstick (e.g. another reward
    definition or action space); the message names the differing fields."""


def same_section(candidate: Any, serving: Any, section: str, cand_ref: str, serving_ref: str) -> None:
    """Raise :class:`GateMismatch` naming every field of config section ``section`` (a Config
    dataclass) that differs between the candidate's and the serving version's configs."""
    a, b = getattr(candidate, section).to_dict(), getattr(serving, section).to_dict()
    diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    if diff:
        fields = "; ".join(f"{section}.{k}: candidate {x!r}, serving {y!r}" for k, (x, y) in diff.items())
        raise GateMismatch(f"{cand_ref} and {serving_ref} define {section} differently ({fields}). The gate values "
                           f"both on the yardstick that produced the log, {serving_ref}'s {section}; a candidate "
                           f"trained for another {section} cannot be compared on it. Retrain the candidate with "
                           f"the serving version's {section}, or promote it with --force (recorded as forced)")


@dataclasses.dataclass(frozen=True)
class GateData:
    """The arrays the promotion gate needs, one entry per logged decision used (n,).

    Rows of the log the workload could not use (no outcome joined yet, no logged action) are left
    out and counted in ``skipped``. ``q_logged``/``v_target`` are the doubly robust estimator's
    model terms; a workload without a value model leaves them None and DR is skipped.
    """

    rewards: np.ndarray
    """r_i: the reward of each logged decision under the SERVING version's reward definition (the
    yardstick that produced the log; never the candidate's), (n,)."""
    target_prob: np.ndarray
    """π(a_i|s_i): the candidate's probability of the logged action under its serving rule, (n,)."""
    logging_prob: np.ndarray
    """μ(a_i|s_i): the logged propensity of the serving version that decided, (n,)."""
    unsupported: np.ndarray | None = None
    """u_i: the candidate's probability mass on actions the logging policy could not take at s_i
    (μ(a|s_i) = 0), (n,); None: the logging policy gives every action a positive probability
    (rows with a logged propensity of 1 are recognised as deterministic anyway)."""
    reward_floor: float = 0.0
    """The least reward the definition can give (the gate counts what the log cannot see at it)."""
    advice: str = ""
    """What to change when the log cannot value the candidate (e.g. serve with more exploration)."""
    q_logged: np.ndarray | None = None
    """q̂(s_i, a_i): the candidate's value estimate of the logged action, (n,), or None."""
    v_target: np.ndarray | None = None
    """v̂(s_i) = Σ_a π(a|s_i) q̂(s_i, a): the candidate's value of its own decision, (n,), or None."""
    skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Rows of the input left out, by reason (``{"outcome not joined": 12}``)."""

    def __post_init__(self) -> None:
        n = len(self.rewards)
        for name in ("rewards", "target_prob", "logging_prob", "unsupported", "q_logged", "v_target"):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr) != (n,):
                raise ValueError(f"GateData.{name}: expected shape ({n},) like rewards, got {np.shape(arr)}")
        if (self.q_logged is None) != (self.v_target is None):
            raise ValueError("GateData: q_logged and v_target go together (both arrays or both None)")


GateDataFn = Callable[[GateModel, GateModel, "pa.Table"], GateData]
"""``(candidate, serving, rows) -> GateData``: see :class:`GateData` and the module docstring."""


EvaluateFn = Callable[[Any, Path, Any, Mapping[str, Any]], dict[str, dict[str, float]]]
"""``(cfg, data_dir, model, others) -> {method: {metric: value}}``: the model under the workload's
name, each model of ``others`` (published models to compare, e.g. ablations) under its label, and
the workload's baselines."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model family, as the platform sees it. See the module docstring."""

    name: str
    description: str
    config_cls: type[TrainConfig]
    configs_dir: Path
    trainer: Trainer
    load_model: Callable[[Path, Any, dict[str, Any]], Any]
    """``(version_dir, cfg, meta) -> model`` (inference only, eval mode)."""
    evaluate: EvaluateFn
    policy: type[Policy]
    headline: Headline
    make_data: Callable[[Any, Path], None] | None = None
    """``(cfg, out_dir) -> None``: a generated or simulated dataset (only when asked for)."""
    generator_fields: tuple[str, ...] = ()
    """Config fields ``make_data`` reads (besides ``seed``): they key a ``data: generate`` dataset, so
    trials of a sweep over other fields share one dataset (the contract suite checks the list)."""
    importers: Mapping[str, Callable[..., None]] = dataclasses.field(default_factory=dict)
    """``{format: (files, out_dir, cfg, *, option=default, ...) -> None}`` for ``adray data import``;
    the keyword-only parameters are the format's options (``--option KEY=VALUE``,
    :mod:`adray.data.options`), each defaulting to filling in nothing."""
    gate_data: GateDataFn | None = None
    """Inputs of the off-policy promotion gate (``adray models promote --gate ope``); None: the
    workload's versions can be promoted only without a gate."""

    def __post_init__(self) -> None:
        fields = self.config_cls.field_names()
        if self.trainer.loop_field not in fields:
            raise TypeError(f"workload {self.name}: loop field {self.trainer.loop_field!r} is not a field of "
                            f"{self.config_cls.__name__}")
        unknown = sorted(set(self.generator_fields) - set(fields))
        if unknown or (self.make_data is not None and not self.generator_fields):
            raise TypeError(f"workload {self.name}: generator_fields {list(self.generator_fields)} must be "
                            f"non-empty fields of {self.config_cls.__name__} (unknown: {unknown})")

    def loop_length(self, cfg: Any) -> int:
        return int(getattr(cfg, self.trainer.loop_field))


class WorkloadError(LookupError):
    """Unknown workload name."""


def workload_names() -> list[str]:
    from workloads import WORKLOADS

    return list(WORKLOADS)


def get_workload(name: str) -> Workload:
    """The workload registered under ``name`` (its module is imported on first use)."""
    from workloads import WORKLOADS  # a dict of module paths: no import of any workload here

    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; available: {sorted(WORKLOADS)}")
    wl = importlib.import_module(WORKLOADS[name]).WORKLOAD
    if not isinstance(wl, Workload) or wl.name != name:
        raise TypeError(f"{WORKLOADS[name]}.WORKLOAD must be a Workload named {name!r}")
    return wl


GENERATE = "generate"
"""The ``data`` value that asks for the workload's generated dataset."""


def generator_key(wl: Workload, cfg: TrainConfig) -> str:
    """Hash of what a ``data: generate`` dataset is made from (generator fields and seed)."""
    values = cfg.key_dict()
    spec = {"workload": wl.name, "seed": values["seed"], **{f: values[f] for f in wl.generator_fields}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_dir_for(wl: Workload, cfg: TrainConfig) -> Path | str:
    """Where ``cfg``'s dataset is: the ``data`` path or storage URI (``s3://bucket/x``, kept a
    string), ``data/<workload>``, or the generated one: ``data/<workload>-<generator key>`` on the
    storage every node sees (``$ADRAY_STORAGE``, by default ``$ADRAY_HOME``), so a Train worker or
    Tune trial on another node reads the dataset the driver generated."""
    if cfg.data == GENERATE:
        from adray.paths import storage

        place = storage().child("data", f"{wl.name}-{generator_key(wl, cfg)}")
        return place.local_path() if place.is_local else place.uri
    if "://" in cfg.data:
        return cfg.data
    return Path(cfg.data) if cfg.data else Path("data") / wl.name
