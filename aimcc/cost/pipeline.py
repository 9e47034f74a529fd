"""Pipeline scheduler: chunk the sequence, order the chunks on tiles, clusters and DMA engines.

A *layer* is one tile/cluster pair: the stages on ``tile:i`` and ``cluster:i`` form layer i (the
unit of HARP's pipeline modes, and the unit a chunk size is chosen for, since each cluster's TCDM
bounds its own chunk). Each chunked stage becomes one task per chunk; a task waits for the
chunks of its dependencies that cover its tokens (all of them for unchunked stages and for the
keys/values of qk/av), and a DMA transfer task is inserted wherever a result changes unit.

The strategies only add constraints to that dataflow graph:

* ``serial``: one task at a time on the whole chip (tile, then cluster, then the next layer);
* ``intra``: a layer waits for the layers it reads to finish all chunks (layer-by-layer), but
  inside a layer the tile computes chunk k+1 while the cluster handles chunk k;
* ``cross``: a layer's units never overlap each other (no intra-layer pipeline), but layer l+1
  starts on chunk k as soon as layer l finished it;
* ``both``: dataflow only; ``auto`` simulates all four and keeps the fastest.

With ``clusters_per_tile`` = c, chunk k of a cluster stage runs on lane k mod c of that layer's
clusters (``cluster:i``, ``cluster:i.1``, ...), each with its own DMA engine. The simulation
is a non-delay list schedule: whenever a unit is free it starts its ready task with the
earliest tokens (then program order). Chunk sizes are searched per layer: one size for all
layers first, then each layer in turn.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from aimcc.arch import Arch
from aimcc.cost.model import (
    ANALOG,
    DIGITAL_KINDS,
    SEQUENCE_MIXING,
    Stage,
    dtype_bytes,
    link_nj,
    link_ns,
    output_elements,
    stage_ns,
    tcdm_bytes,
    tcdm_parts,
    transfer_ns,
    unit_power_w,
)
from aimcc.errors import AimccError

STRATEGIES = ("serial", "intra", "cross", "both")
_LEAST_CONSTRAINED_FIRST = ("both", "cross", "intra", "serial")
# Tasks the chunk search may build and simulate (~25 ms of Python): bounds compile time on big
# models. On the corpus a budget 4x larger improved no makespan by more than 0.03 %.
SEARCH_BUDGET = 10_000
_UNIT_KINDS = ("tile", "cluster", "dma", "link")


class Slot(NamedTuple):
    """One task on the timeline: a chunk of a stage, or a transfer (kind "transfer").

    A named tuple: a schedule has thousands, and a frozen dataclass is 5x slower to make."""

    name: str
    kind: str
    chunk: int
    tokens: int
    unit: str
    start_ns: float
    end_ns: float


@dataclass(frozen=True)
class UnitUse:
    unit: str
    busy_ns: float
    utilisation: float
    energy_nj: float


@dataclass(frozen=True)
class Schedule:
    strategy: str
    clusters_per_tile: int
    tokens: int
    chunk_per_layer: dict[int, int]
    slots: tuple[Slot, ...]
    makespan_ns: float
    units: tuple[UnitUse, ...]
    energy_nj: float
    busy_bound_ns: float  # the busiest unit's total work
    critical_path_ns: float  # the longest dependency chain, with unlimited units
    chain_bound_ns: float  # the chain where each join also waits for its ancestors' serial work

    @property
    def lower_bound_ns(self) -> float:
        return max(self.busy_bound_ns, self.critical_path_ns, self.chain_bound_ns)

    @property
    def gap(self) -> float:
        """How far the makespan is above the lower bound (0.05 = 5 %)."""
        return self.makespan_ns / self.lower_bound_ns - 1.0 if self.lower_bound_ns else 0.0


def schedule(
    stages: Sequence[Stage],
    tokens: int,
    arch: Arch,
    *,
    strategy: str = "auto",
    clusters_per_tile: int = 1,
    chunk: int | None = None,
) -> Schedule:
    """Choose chunk sizes (per layer) and a strategy, and simulate the timeline of ``stages``."""
    if strategy != "auto" and strategy not in STRATEGIES:
        raise AimccError(
            f"unknown schedule strategy '{strategy}': use auto, {', '.join(STRATEGIES)}"
        )
    if tokens < 1 or clusters_per_tile < 1:
        raise AimccError(f"schedule: tokens ({tokens}) and clusters per tile must be at least 1")
    layers = _check(stages, arch, clusters_per_tile)
    of_layer: dict[int, list[Stage]] = defaultdict(list)
    for s in stages:
        of_layer[layers[s.name]].append(s)
    candidates = {
        layer: _chunk_candidates(layer, of_layer[layer], tokens, arch, chunk)
        for layer in sorted(of_layer)
    }
    names = STRATEGIES if strategy == "auto" else (strategy,)
    sim = _Simulator(stages, layers, tokens, arch, clusters_per_tile)
    return sim.result(*_search(sim, names, candidates))


def replay(
    stages: Sequence[Stage],
    tokens: int,
    arch: Arch,
    *,
    strategy: str,
    clusters_per_tile: int,
    chunk_per_layer: dict[int, int],
) -> Schedule:
    """The timeline of a decision already made (e.g. recorded in the IR): one simulation."""
    sim = _decided(stages, tokens, arch, strategy, clusters_per_tile, chunk_per_layer)
    return sim.result(strategy, chunk_per_layer)


def critical(
    stages: Sequence[Stage],
    tokens: int,
    arch: Arch,
    *,
    strategy: str,
    clusters_per_tile: int,
    chunk_per_layer: dict[int, int],
) -> tuple[float, dict[str, float], int]:
    """One simulation of a decision (as :func:`replay`, without the report): its makespan,
    each stage's time on a critical chain of the timeline, and the tasks simulated."""
    sim = _decided(stages, tokens, arch, strategy, clusters_per_tile, chunk_per_layer)
    on_chain = sim.critical_ns(strategy, chunk_per_layer)
    makespan = sim.makespan(strategy, chunk_per_layer)
    named = {s.name: ns for s, ns in zip(stages, on_chain, strict=True)}
    return makespan, named, sim.tasks_handled


def _decided(
    stages: Sequence[Stage],
    tokens: int,
    arch: Arch,
    strategy: str,
    clusters_per_tile: int,
    chunk_per_layer: dict[int, int],
) -> _Simulator:
    """The simulator of a decision made elsewhere, checked: a known strategy and a chunk size
    for every layer."""
    if strategy not in STRATEGIES:
        raise AimccError(f"recorded schedule strategy '{strategy}' unknown")
    layers = _check(stages, arch, clusters_per_tile)
    missing = sorted(set(layers.values()) - set(chunk_per_layer))
    if missing:
        raise AimccError(f"recorded schedule has no chunk size for layer {missing[0]}")
    return _Simulator(stages, layers, tokens, arch, clusters_per_tile)


def _check(stages: Sequence[Stage], arch: Arch, lanes: int) -> dict[str, int]:
    """Validate the stage list; return each stage's layer."""
    layers: dict[str, int] = {}
    held = {s.unit for s in stages if s.kind == ANALOG}  # tiles; a replica holds its own
    for s in stages:
        unit_kind, _, index = s.unit.partition(":")
        want = "tile" if s.kind == ANALOG else "cluster"
        if s.kind != ANALOG and s.kind not in DIGITAL_KINDS:
            raise AimccError(f"stage '{s.name}': unknown kind '{s.kind}'")
        if unit_kind != want or not index.isdigit():
            raise AimccError(f"stage '{s.name}' ({s.kind}): unit '{s.unit}' must be '{want}:<n>'")
        for replica in s.replicas:
            kind, _, at = replica.partition(":")
            if s.kind != ANALOG or kind != "tile" or not at.isdigit() or replica in held:
                raise AimccError(
                    f"stage '{s.name}' ({s.kind}): replica '{replica}' must be a 'tile:<n>' of "
                    "no other stage (analog stages only)"
                )
            held.add(replica)
        if s.name in layers:
            raise AimccError(f"stage '{s.name}': name used twice")
        for dep in s.deps:
            if dep not in layers:
                raise AimccError(f"stage '{s.name}': dependency '{dep}' is not an earlier stage")
        layers[s.name] = int(index)
    clustered = {layers[s.name] for s in stages if s.kind != ANALOG}
    if len(clustered) * lanes > arch.system_clusters:
        raise AimccError(
            f"schedule: {len(clustered)} layers x {lanes} clusters per tile exceed "
            f"arch '{arch.name}': {arch.system_clusters} clusters on {arch.chips} chip(s)"
        )
    return layers


def _chunked(stage: Stage, tokens: int) -> bool:
    return stage.dims.get("T", tokens) == tokens


def tcdm_need(stages: Sequence[Stage], t: int, arch: Arch) -> int:
    """TCDM one cluster needs to run its chunked ``stages`` on chunks of ``t`` tokens.

    Resident weights of every stage, plus the running kernel's workspace and chunk buffers,
    plus the largest chunk buffer of another stage: kernels run one after another, so at most
    a producer's and a consumer's chunk are in flight, and a streamed workspace (keys/values,
    weight panels) only while its kernel runs. For a LoRA layer (X.A and .B, no workspace)
    this is the paper's working set: docs/REFERENCES.md "Digital cluster", Li et al. arXiv
    2411.17367."""
    parts = [tcdm_parts(s, t, arch) for s in stages]
    resident = sum(p[0] for p in parts)
    buffers = sorted((p[2] for p in parts), reverse=True)[:2]  # the two largest chunk buffers
    best = 0
    for _, work, io in parts:  # the largest buffer of another stage
        other = buffers[0] if io != buffers[0] else (buffers[1] if len(buffers) > 1 else 0)
        best = max(best, work + io + other)
    return resident + best


def cluster_overflow(
    stages: Sequence[Stage], tokens: int, arch: Arch, t: int = 1
) -> tuple[int, str]:
    """(bytes needed, what) when one cluster's ``stages`` cannot run a chunk of ``t`` tokens
    (or an unchunked stage) in its TCDM; (0, "") when they fit. The split pass and the chunk
    search ask this same question."""
    capacity = arch.cluster.tcdm_kib * 1024
    digital = [s for s in stages if s.kind != ANALOG]
    for s in digital:
        if not _chunked(s, tokens) and tcdm_bytes(s, s.dims["T"], arch) > capacity:
            return tcdm_bytes(s, s.dims["T"], arch), f"stage '{s.name}'"
    t = min(t, tokens)
    need = tcdm_need([s for s in digital if _chunked(s, tokens)], t, arch)
    return (need, f"a chunk of {t} token(s)") if need > capacity else (0, "")


def _chunk_candidates(
    layer: int, stages: list[Stage], tokens: int, arch: Arch, chunk: int | None
) -> list[int]:
    """Chunk sizes whose working set fits one cluster's TCDM: core count x 2^k, and the whole."""
    capacity = arch.cluster.tcdm_kib * 1024
    digital = [s for s in stages if s.kind != ANALOG]
    for s in digital:
        if not _chunked(s, tokens) and tcdm_bytes(s, s.dims["T"], arch) > capacity:
            need = tcdm_bytes(s, s.dims["T"], arch)
            raise AimccError(
                f"stage '{s.name}': needs {need} B of TCDM, the cluster has {capacity} B"
            )

    chunked = [s for s in digital if _chunked(s, tokens)]

    def need(t: int) -> int:
        return tcdm_need(chunked, t, arch)

    if chunk is not None:
        if not 1 <= chunk <= tokens or need(chunk) > capacity:
            raise AimccError(
                f"chunk of {chunk} tokens refused for layer {layer}: its cluster stages need "
                f"{need(chunk)} B of TCDM, the cluster has {capacity} B (sequence {tokens})"
            )
        return [chunk]
    sizes = []
    size = arch.cluster.compute_cores
    while size < tokens:
        sizes.append(size)
        size *= 2
    fitting = [t for t in [*sizes, tokens] if need(t) <= capacity]
    if not fitting:  # below the core count: the largest chunk that fits
        fitting = [
            t for t in range(min(tokens, arch.cluster.compute_cores), 0, -1) if need(t) <= capacity
        ][:1]
    if not fitting:
        raise AimccError(
            f"cluster {layer}: one token needs {need(1)} B of TCDM, the cluster has {capacity} B "
            "(a kernel that cannot be split by columns: a norm row or one attention head)"
        )
    return fitting


def _search(
    sim: _Simulator, strategies: Sequence[str], candidates: dict[int, list[int]]
) -> tuple[str, dict[int, int]]:
    """The fastest (strategy, chunk per layer) found within SEARCH_BUDGET tasks.

    Every strategy sweeps one chunk size for all layers first, the least constrained first,
    skipping those whose lower bound (:meth:`_Simulator.bound_ns`) exceeds the best makespan
    found at every size; then, best strategy first,
    each layer's size in turn is improved (coordinate descent) while the budget lasts. The
    budget counts tasks built and simulated, not seconds, so the result does not depend on
    the machine.
    """

    def run(name: str, choice: dict[int, int]) -> float:
        return sim.makespan(name, choice)

    def uniform(size: int) -> dict[int, int]:
        return {layer: max([t for t in c if t <= size] or c[:1]) for layer, c in candidates.items()}

    sizes = sorted({t for c in candidates.values() for t in c})
    starts: list[tuple[float, int, str, dict[int, int]]] = []
    for name in sorted(strategies, key=_LEAST_CONSTRAINED_FIRST.index):
        best_so_far = min((s[0] for s in starts), default=math.inf)
        if min(sim.bound_ns(name, uniform(t)) for t in sizes) > best_so_far:
            continue
        # larger chunks trade per-call overhead against overlap: the makespan falls, then
        # rises, so the sweep stops at the first size that does not improve it
        choice = uniform(sizes[0])
        for t in sizes[1:]:
            if run(name, uniform(t)) >= run(name, choice):
                break
            choice = uniform(t)
        starts.append((run(name, choice), strategies.index(name), name, choice))
    starts.sort(key=lambda s: s[:2])
    best = starts[0]
    if len(candidates) > 1:
        for _, order, name, choice in starts:
            for layer, options in candidates.items():
                for t in options:
                    if sim.tasks_handled > SEARCH_BUDGET:
                        return best[2], best[3]
                    trial = {**choice, layer: t}
                    if run(name, trial) < run(name, choice):
                        choice = trial
                        if (run(name, choice), order) < best[:2]:
                            best = (run(name, choice), order, name, choice)
    return best[2], best[3]


@dataclass
class _Graph:
    """The dataflow tasks of one chunking as parallel lists, in data order (preds come first).

    A task is a chunk of a stage or the transfer of one chunk's result to another unit. The
    graph does not depend on the strategy: the strategies add locks, or (``intra``) barriers
    appended after the tasks, when it is simulated.
    """

    stage: list[int]  # position of the stage; a transfer: of the stage whose result it moves
    chunk: list[int]
    tokens: list[int]
    unit: list[int]  # index into _Simulator.units; -1: a zero-time barrier
    dest: list[int]  # a transfer's destination unit; -1: a chunk of a stage
    layer: list[int]  # a transfer belongs to its consumer's layer
    dur: list[float]
    # Feeding the earliest join first, then earliest tokens, then program order; a transfer
    # right after its source: a chunk of stage i from token f feeding join j has
    # 2 * ((j * (tokens + 1) + f) * stages + i), its transfers one more.
    prio: list[int]
    preds: list[list[int]]
    link_nj: dict[int, float] = field(default_factory=dict)  # chip-to-chip transfers' energy

    def add(
        self,
        stage: int,
        chunk: int,
        tokens: int,
        unit: int,
        dest: int,
        layer: int,
        dur: float,
        prio: int,
        preds: list[int],
    ) -> int:
        self.stage.append(stage)
        self.chunk.append(chunk)
        self.tokens.append(tokens)
        self.unit.append(unit)
        self.dest.append(dest)
        self.layer.append(layer)
        self.dur.append(dur)
        self.prio.append(prio)
        self.preds.append(preds)
        return len(self.dur) - 1

    @cached_property
    def work_ns(self) -> float:
        return math.fsum(self.dur)

    @cached_property
    def succs(self) -> list[list[int]]:
        succs: list[list[int]] = [[] for _ in self.dur]
        for task, preds in enumerate(self.preds):
            for p in preds:
                succs[p].append(task)
        return succs

    @cached_property
    def order(self) -> list[int]:
        """Tasks by priority (ties: task order): a ready queue holds places in this list."""
        return sorted(range(len(self.dur)), key=self.prio.__getitem__)

    @cached_property
    def rank(self) -> list[int]:
        """Each task's place in ``order``."""
        rank = [0] * len(self.dur)
        for place, task in enumerate(self.order):
            rank[task] = place
        return rank


@dataclass(frozen=True)
class _Timeline:
    start: list[float]
    end: list[float]
    makespan_ns: float


class _Simulator:
    """Task graphs and timelines of one stage list, cached by chunking (and strategy).

    The strategies share the graph of a chunking, and the search revisits choices; the chosen
    one's timeline is the result. Units are numbered (``units``) for the event loop.
    """

    def __init__(
        self, stages: Sequence[Stage], layers: dict[str, int], tokens: int, arch: Arch, lanes: int
    ):
        self.stages, self.tokens, self.arch, self.lanes = stages, tokens, arch, lanes
        self.layer = [layers[s.name] for s in stages]
        self.layer_ids = sorted(set(self.layer))
        self.chunked = [_chunked(s, tokens) for s in stages]
        self.units: list[str] = []
        self.unit_ids: dict[str, int] = {}
        self.chip: list[int] = []  # of each unit (-1: a link)
        position = {s.name: i for i, s in enumerate(stages)}
        # (dependency, whole): qk/av read every chunk of their keys/values
        self.deps = [
            [(position[d], s.kind in SEQUENCE_MIXING and j > 0) for j, d in enumerate(s.deps)]
            for s in stages
        ]
        # The first join (a stage reading every chunk of its keys/values) each stage feeds,
        # as a rank: stages feeding an earlier join go first on a shared unit, then earliest
        # tokens. Without it the last value chunks on the V projection's cluster waited behind
        # the early queries of attention heads placed on the same cluster (head split), and
        # every head group's .V with them.
        self.join = [len(stages)] * len(stages)
        for position in range(len(stages) - 1, -1, -1):
            for dep, whole in self.deps[position]:
                via = position if whole else self.join[position]
                self.join[dep] = min(self.join[dep], via)
        # The units a stage's chunks go to in turn: cluster stages deal chunks to the lanes,
        # a replicated analog stage to its tiles and their replicas.
        self.lane_units = []
        for s, chunked in zip(stages, self.chunked, strict=True):
            spread = lanes if chunked and s.unit.startswith("cluster") else 1
            names = [s.unit, *(f"{s.unit}.{lane}" for lane in range(1, spread))]
            if chunked and s.replicas:
                names = [s.unit, *s.replicas]
            self.lane_units.append([self._unit(name) for name in names])
        # ``cross`` locks a layer's units together; a replica's tiles are a layer of their own
        self.replica_lock = {
            self.unit_ids[r]: -2 - self.unit_ids[r]
            for s in stages
            for r in s.replicas
            if r in self.unit_ids
        }
        # A transfer runs on the DMA core of the cluster it goes to, else of the one it leaves.
        self.dma_of = {
            self.unit_ids[name]: self._unit("dma:" + name.partition(":")[2])
            for name in list(self.units)
            if name.startswith("cluster")
        }
        self.tasks_handled = 0  # built and simulated: the search's budget
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._timelines: dict[tuple[str, tuple[int, ...]], _Timeline] = {}
        # per stage: tokens -> ns of a chunk (a stage has one or two chunk sizes)
        self._chunk_ns: list[dict[int, float]] = [{} for _ in stages]
        self._move_ns: dict[tuple[int, int, int, int], tuple[float, float]] = {}

    def _unit(self, name: str) -> int:
        if name not in self.unit_ids:
            self.unit_ids[name] = len(self.units)
            self.units.append(name)
            self.chip.append(self.arch.chip_of(name) if not name.startswith("link") else -1)
        return self.unit_ids[name]

    def graph(self, chunk_per_layer: Mapping[int, int]) -> _Graph:
        key = tuple(chunk_per_layer[layer] for layer in self.layer_ids)
        if key not in self._graphs:
            self._graphs[key] = self._build(chunk_per_layer)
            self.tasks_handled += len(self._graphs[key].dur)
        return self._graphs[key]

    def bound_ns(self, strategy: str, chunk_per_layer: Mapping[int, int]) -> float:
        """A lower bound on a strategy's makespan from the stages' work alone (no graph built,
        transfers left out): ``serial`` runs all work one task at a time; ``intra`` runs the
        groups of layers one after another along their longest chain, each for at least its
        busiest unit's work (a stage dealt to c lanes counts 1/c); the others get 0."""
        if strategy == "serial":
            return sum(self._work_ns(p, chunk_per_layer) for p in range(len(self.stages)))
        if strategy != "intra":
            return 0.0
        group, nodes, reads = self._layer_groups
        busy: dict[tuple[int, str], float] = defaultdict(float)
        for position, s in enumerate(self.stages):
            lanes = len(self.lane_units[position])
            busy[group[self.layer[position]], s.unit] += (
                self._work_ns(position, chunk_per_layer) / lanes
            )
        longest = dict.fromkeys(nodes, 0.0)
        for (node, _), work in busy.items():
            longest[node] = max(longest[node], work)
        for node in nodes:  # topological order
            longest[node] += max((longest[r] for r in reads[node]), default=0.0)
        return max(longest.values(), default=0.0)

    def _work_ns(self, position: int, chunk_per_layer: Mapping[int, int]) -> float:
        """The work of all chunks of one stage."""
        if not self.chunked[position]:
            return self._stage_ns(position, self.stages[position].dims["T"])
        size = chunk_per_layer[self.layer[position]]
        full, rest = divmod(self.tokens, size)
        return full * self._stage_ns(position, size) + (
            self._stage_ns(position, rest) if rest else 0.0
        )

    def _stage_ns(self, position: int, count: int) -> float:
        """ns of a chunk of ``count`` tokens of a stage (each stage has one or two sizes)."""
        chunk_ns = self._chunk_ns[position]
        if count not in chunk_ns:
            chunk_ns[count] = stage_ns(self.stages[position], count, self.arch)
        return chunk_ns[count]

    def makespan(self, strategy: str, chunk_per_layer: Mapping[int, int]) -> float:
        """``serial`` needs no simulation: while no task runs one is ready (the graph is
        acyclic), so one task at a time never leaves a gap and the makespan is the total work."""
        if strategy == "serial":
            return self.graph(chunk_per_layer).work_ns
        return self.timeline(strategy, chunk_per_layer).makespan_ns

    def timeline(self, strategy: str, chunk_per_layer: Mapping[int, int]) -> _Timeline:
        key = (strategy, tuple(chunk_per_layer[layer] for layer in self.layer_ids))
        if key not in self._timelines:
            g = self.graph(chunk_per_layer)
            if strategy == "serial":
                start, end = _serial_schedule(g)
            elif strategy == "cross":  # the units of a layer share one lock
                start, end = _list_schedule(g, self._locks(g))
            else:
                if strategy == "intra":
                    g = self._with_layer_barriers(g)
                start, end = _list_schedule(g, None)
            makespan = max((e for e, u in zip(end, g.unit, strict=True) if u >= 0), default=0.0)
            self._timelines[key] = _Timeline(start, end, makespan)
            self.tasks_handled += len(g.dur)
        return self._timelines[key]

    def _locks(self, g: _Graph) -> list[int]:
        """``cross``: the lock of each task, its layer's (a replica's tiles: their own)."""
        if not self.replica_lock:
            return g.layer
        return [self.replica_lock.get(u, layer) for u, layer in zip(g.unit, g.layer, strict=True)]

    def critical_ns(self, strategy: str, chunk_per_layer: Mapping[int, int]) -> list[float]:
        """Per stage: the time its tasks spend on one critical chain of the timeline, walked
        back from the last task to end: each task started when a dependency ended, else the
        task before it on its unit (or lock; for ``serial`` any task)."""
        g = self.graph(chunk_per_layer)
        timeline = self.timeline(strategy, chunk_per_layer)
        start, end = timeline.start, timeline.end
        if strategy == "intra":
            g = self._with_layer_barriers(g)
        locks = self._locks(g) if strategy == "cross" else [0] * len(g.dur)
        ended: dict[tuple[str, int, float], int] = {}
        for t in range(len(g.dur)):
            if g.unit[t] >= 0:
                ended[("unit", g.unit[t], end[t])] = t
                ended[("lock", locks[t], end[t])] = t
                ended[("any", 0, end[t])] = t
        critical = [0.0] * len(self.stages)
        real = [t for t in range(len(g.dur)) if g.unit[t] >= 0]
        task = max(real, key=end.__getitem__, default=None)
        seen: set[int] = set()
        while task is not None and task not in seen:
            seen.add(task)
            if g.unit[task] >= 0 and g.dest[task] < 0:
                critical[g.stage[task]] += g.dur[task]
            at = start[task]
            if at <= 0.0:
                break
            found = [p for p in g.preds[task] if end[p] == at]
            keys = (("unit", g.unit[task], at), ("lock", locks[task], at), ("any", 0, at))
            found += [ended[key] for key in keys if key in ended]
            task = next((t for t in found if t not in seen), None)
        return critical

    def _build(self, chunk_per_layer: Mapping[int, int]) -> _Graph:
        """Chunks of every stage, and transfers wherever a result changes unit."""
        stages, tokens, arch = self.stages, self.tokens, self.arch
        g = _Graph([], [], [], [], [], [], [], [], [])
        # stage -> (tasks in token order, chunked, chunk size): chunk i covers [i*size, (i+1)*size)
        by_stage: list[tuple[list[int], bool, int]] = []
        moved: dict[tuple[int, int], int] = {}

        def transfer(src: int, dest: int, layer: int, parts: int) -> int:
            """A chunk's result to another unit: on the destination's DMA core (else the
            source's), or over the chip-to-chip link when the units are on different chips.
            A consumer split in column parts receives its share."""
            if (src, dest) not in moved:
                producer, count = g.stage[src], g.tokens[src]
                hops = abs(self.chip[dest] - self.chip[g.unit[src]])
                if hops:
                    dma = self._unit(f"link:{min(self.chip[dest], self.chip[g.unit[src]])}")
                else:
                    dma = self.dma_of.get(dest, self.dma_of.get(g.unit[src], -1))
                    if dma < 0:  # tile to tile
                        dma = self._unit(f"dma:{layer}")
                key = (producer, count, parts, hops)
                if key not in self._move_ns:
                    elements = output_elements(stages[producer], count, arch)
                    size = math.ceil(elements / parts) * dtype_bytes(arch)
                    self._move_ns[key] = (
                        link_ns(size, hops, arch) if hops else transfer_ns(size, arch),
                        link_nj(size, hops, arch),
                    )
                (dur, energy), prio = self._move_ns[key], g.prio[src] + 1
                moved[src, dest] = g.add(
                    producer, g.chunk[src], count, dma, dest, layer, dur, prio, [src]
                )
                if hops:
                    g.link_nj[moved[src, dest]] = energy
            return moved[src, dest]

        for position, s in enumerate(stages):
            layer, chunked = self.layer[position], self.chunked[position]
            lanes = self.lane_units[position]
            size = chunk_per_layer[layer] if chunked else s.dims["T"]
            tasks: list[int] = []
            for k, first in enumerate(range(0, tokens if chunked else size, size)):
                count = min(size, tokens - first) if chunked else size
                unit = lanes[k % len(lanes)]
                preds = []
                for dep, whole in self.deps[position]:
                    dep_tasks, dep_chunked, dep_size = by_stage[dep]
                    if chunked and dep_chunked and not whole:
                        dep_tasks = dep_tasks[
                            first // dep_size : (first + count - 1) // dep_size + 1
                        ]
                    for src in dep_tasks:
                        if g.unit[src] == unit:
                            preds.append(src)
                        else:
                            preds.append(transfer(src, unit, layer, s.dims.get("parts", 1)))
                prio = 2 * ((self.join[position] * (tokens + 1) + first) * len(stages) + position)
                tasks.append(
                    g.add(
                        position,
                        k,
                        count,
                        unit,
                        -1,
                        layer,
                        self._stage_ns(position, count),
                        prio,
                        preds,
                    )
                )
            by_stage.append((tasks, chunked, size))
        return g

    @cached_property
    def _layer_groups(self) -> tuple[dict[int, int], list[int], dict[int, list[int]]]:
        """Layers that read each other merged (condensation): group of each layer, the groups
        in topological order, and the groups each one reads."""
        edges = [
            (self.layer[dep], self.layer[position])
            for position, deps in enumerate(self.deps)
            for dep, _ in deps
            if self.layer[dep] != self.layer[position]
        ]
        return condensation(self.layer_ids, edges)

    def _with_layer_barriers(self, g: _Graph) -> _Graph:
        """``intra``: each layer waits for every task of the layers it reads (zero-time barriers
        after the tasks, one per group of layers)."""
        group, nodes, reads = self._layer_groups
        real = len(g.dur)
        barrier = {node: real + i for i, node in enumerate(nodes)}
        members: dict[int, list[int]] = {node: [] for node in nodes}
        for task, layer in enumerate(g.layer):
            members[group[layer]].append(task)
        waits = {node: [barrier[r] for r in reads[node]] for node in nodes}
        count = len(nodes)
        barred = _Graph(
            g.stage + [-1] * count,
            g.chunk + [0] * count,
            g.tokens + [0] * count,
            g.unit + [-1] * count,
            g.dest + [-1] * count,
            g.layer + [-1] * count,
            g.dur + [0.0] * count,
            g.prio + [0] * count,
            [p + waits[group[layer]] for p, layer in zip(g.preds, g.layer, strict=True)]
            + [members[node] for node in nodes],
        )
        # Barriers never queue on a unit: the tasks keep their places in the priority order.
        barred.order, barred.rank = g.order, g.rank
        return barred

    def result(self, strategy: str, chunk_per_layer: dict[int, int]) -> Schedule:
        """The Schedule of one decision: its timeline, each unit's load, and the bounds."""
        g = self.graph(chunk_per_layer)
        timeline = self.timeline(strategy, chunk_per_layer)
        names = [s.name for s in self.stages]
        unit_order = {unit: _unit_order(unit) for unit in self.units}
        slots = sorted(
            (
                Slot(
                    names[g.stage[t]] + (f"->{self.units[g.dest[t]]}" if g.dest[t] >= 0 else ""),
                    self.stages[g.stage[t]].kind if g.dest[t] < 0 else "transfer",
                    g.chunk[t],
                    g.tokens[t],
                    self.units[g.unit[t]],
                    timeline.start[t],
                    timeline.end[t],
                )
                for t in range(len(g.dur))  # the barriers of intra come after these
            ),
            key=lambda s: (s.start_ns, unit_order[s.unit], s.name, s.chunk),
        )
        makespan = max((s.end_ns for s in slots), default=0.0)
        busy: dict[str, float] = defaultdict(float)
        for s in slots:
            busy[s.unit] += s.end_ns - s.start_ns
        units = []
        tiles: dict[str, int] = {}  # a layer's tiles run in parallel, each draws power
        for s in self.stages:
            if s.kind == ANALOG:
                for unit in (s.unit, *s.replicas):
                    tiles[unit] = max(tiles.get(unit, 1), s.dims.get("tiles", 1))
        link_nj: dict[str, float] = defaultdict(float)
        for task, energy in g.link_nj.items():
            link_nj[self.units[g.unit[task]]] += energy
        for unit in sorted(busy, key=_unit_order):
            if unit in link_nj:  # energy per bit moved, from the arch's link section
                units.append(UnitUse(unit, busy[unit], busy[unit] / makespan, link_nj[unit]))
                continue
            active_w, idle_w = unit_power_w(unit.partition(":")[0], self.arch)
            count = tiles.get(unit, 1)
            energy = count * (busy[unit] * active_w + (makespan - busy[unit]) * idle_w)
            units.append(
                UnitUse(unit, busy[unit], busy[unit] / makespan if makespan else 0.0, energy)
            )
        return Schedule(
            strategy=strategy,
            clusters_per_tile=self.lanes,
            tokens=self.tokens,
            chunk_per_layer=dict(sorted(chunk_per_layer.items())),
            slots=tuple(slots),
            makespan_ns=makespan,
            units=tuple(units),
            energy_nj=sum(u.energy_nj for u in units),
            busy_bound_ns=max(busy.values(), default=0.0),
            critical_path_ns=_critical_path(g),
            # The strategies only add constraints to the dataflow: its bound holds for all.
            chain_bound_ns=_chain_bound(g),
        )


def _critical_path(g: _Graph) -> float:
    """The longest chain of the dataflow graph ``g``, with unlimited units."""
    finish: list[float] = []
    for preds, dur in zip(g.preds, g.dur, strict=True):
        ready = 0.0
        for p in preds:
            if finish[p] > ready:
                ready = finish[p]
        finish.append(ready + dur)
    return max(finish, default=0.0)


def _chain_bound(g: _Graph) -> float:
    """A lower bound on the makespan of the dataflow graph ``g`` (tasks in topological order).

    One unit runs its tasks one after another, none before its earliest start (head): so the
    unit is busy until at least ``r + work of its tasks with head >= r`` for every r (the
    one-machine relaxation), and the schedule lasts at least that plus the shortest chain
    after those tasks (tail). Heads are refined at joins (more than two inputs: keys,
    values, whole sequences) with the same bound over the join's ancestors, which captures
    attention waiting for every key and then running all queries on one cluster.

    A join's bound covers only its ancestors that are not an earlier join's (a window: the
    layer since the last attention, not the whole model before it). Any subset of the
    ancestors, with chains to the join found inside it (never longer than the true ones),
    still bounds the join's start; the earlier layers' work starts before the window's and
    rarely sets the maximum (on the 1.1B Llama the bound moved by 0.006 %; on the corpus by
    0-2.9 %, bert_lora the most), and the whole bound costs a layer per join instead of the
    model (4.0 s -> 0.5 s there, with the floor below).
    """
    n, dur, preds = len(g.dur), g.dur, g.preds
    head = [0.0] * n
    # Bit sets of every task's ancestors and itself, bit i - floor for task i: every task
    # below the floor is an ancestor of the last join bounded, so no later window holds it
    # and the sets stay a layer or two long instead of the whole model (1.1B: 1.6 s -> 0.5 s).
    lineage, floor_of = [0] * n, [0] * n
    floor = 0
    # The chunks of one stage share most inputs of a join (all keys): bound those once.
    shared: dict[int, set[int]] = {}
    for t in range(n):
        if len(preds[t]) > 2:
            shared[g.stage[t]] = shared.get(g.stage[t], set(preds[t])) & set(preds[t])
    refined: dict[int, float] = {}
    by_sources: dict[frozenset[int], float] = {}

    def source(p: int) -> int:
        """A transfer's source task (a chunk of a stage): itself for a chunk."""
        while g.dest[p] >= 0 and preds[p]:
            p = preds[p][0]
        return p

    def bits(p: int) -> int:
        """Task p's lineage relative to the current floor."""
        shift = floor - floor_of[p]
        return lineage[p] >> shift if shift else lineage[p]

    before = 0  # the ancestors of the last join bounded (relative to the floor)
    for t in range(n):
        start, members = 0.0, 0
        for p in preds[t]:
            if head[p] + dur[p] > start:
                start = head[p] + dur[p]
            if p >= floor:
                members |= bits(p)
        lineage[t], floor_of[t] = members | (1 << (t - floor)), floor
        stage = g.stage[t]
        if len(preds[t]) > 2:
            if stage not in refined:
                # The one-machine bound leaves the transfers out (fewer tasks: still a bound),
                # so the head groups of one attention, whose inputs are transfers of the same
                # chunks to their clusters (equal sizes, so equal chains), share one bound.
                key = frozenset(source(p) for p in shared[stage])
                if key in by_sources:
                    refined[stage] = by_sources[key]
                    head[t] = max(start, refined[stage])
                    continue
                common = 0
                for p in shared[stage]:
                    if p >= floor:
                        common |= bits(p)
                window = common & ~before
                raw = window.to_bytes((n - floor) // 8 + 1, "little")  # bit i: task floor + i
                chosen = (
                    np.flatnonzero(np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little"))
                    + floor
                ).tolist()
                # The floor rises past the ancestors' leading run (all below it are in them).
                rise = (~common & (common + 1)).bit_length() - 1
                before, floor = common >> rise, floor + rise
                # Each ancestor's shortest way on to the join: the longest chain from its end
                # (inside the window: a task outside it ends no chain, so 0 is its way on).
                to_join: dict[int, float] = {}
                for a in reversed(chosen):
                    reach = dur[a] + to_join.get(a, 0.0)
                    for p in preds[a]:
                        if reach > to_join.get(p, 0.0):
                            to_join[p] = reach
                work = [a for a in chosen if g.dest[a] < 0]
                tails = [to_join.get(a, 0.0) for a in work]
                refined[stage] = by_sources[key] = _one_machine(g, head, work, tails)
            start = max(start, refined[stage])
        head[t] = start
    tail = [0.0] * n  # the longest chain after a task, with unlimited units
    for t in range(n - 1, -1, -1):
        after = dur[t] + tail[t]
        for p in preds[t]:
            if after > tail[p]:
                tail[p] = after
    path = max(map(lambda h, d, t: h + d + t, head, dur, tail), default=0.0)
    return max(path, _one_machine(g, head, range(n), tail))


def _one_machine(
    g: _Graph, head: list[float], tasks: Sequence[int], tail: Sequence[float]
) -> float:
    """max over units and r of r + work with head >= r (+ the shortest tail among them);
    ``tail[i]`` is ``tasks[i]``'s.

    One pass over the tasks in falling head order (ties: task order), with each unit's
    running work and shortest tail.
    """
    units = max(g.unit, default=-1) + 1
    work, shortest = [0.0] * units, [math.inf] * units
    bound = 0.0
    order = sorted(range(len(tasks)), key=lambda i: head[tasks[i]], reverse=True)
    for i in order:
        t = tasks[i]
        u = g.unit[t]
        work[u] += g.dur[t]
        if tail[i] < shortest[u]:
            shortest[u] = tail[i]
        end = head[t] + work[u] + shortest[u]
        if end > bound:
            bound = end
    return bound


def _serial_schedule(g: _Graph) -> tuple[list[float], list[float]]:
    """``serial``: one task at a time on the whole chip, so the best ready task starts when
    the last one ends (the list schedule with one lock for all tasks, without events)."""
    n = len(g.dur)
    waiting = [len(p) for p in g.preds]
    ready = [g.rank[t] for t in range(n) if not waiting[t]]  # a heap of ranks
    heapq.heapify(ready)
    start, end = [0.0] * n, [0.0] * n
    now, finished = 0.0, 0
    while ready:
        task = g.order[heapq.heappop(ready)]
        start[task] = now
        end[task] = now = now + g.dur[task]
        finished += 1
        for s in g.succs[task]:
            waiting[s] -= 1
            if not waiting[s]:
                heapq.heappush(ready, g.rank[s])
    if finished != n:
        raise AimccError(f"schedule: {n - finished} tasks could not run (dependency cycle)")
    return start, end


def _list_schedule(g: _Graph, locks: list[int] | None) -> tuple[list[float], list[float]]:
    """Event-driven non-delay list scheduling: a free unit starts its best ready task.

    ``locks[t]`` is a resource task t holds besides its unit (the strategy's constraint; None:
    no locks). Whenever tasks finish, every free unit with ready tasks offers its best one;
    a free lock goes to the best offer that needs it, the others wait for it to be released.
    Offers compete only for a lock (a unit makes one at a time), so without locks every
    offer starts, and with them each lock is decided on its own.
    """
    n = len(g.dur)
    unit, dur, succs, order, rank = g.unit, g.dur, g.succs, g.order, g.rank
    push, pop = heapq.heappush, heapq.heappop
    waiting = [len(p) for p in g.preds]
    start, end = [0.0] * n, [0.0] * n
    ready: list[list[int]] = [[] for _ in range(max(unit, default=-1) + 1)]  # heaps of ranks
    idle = [True] * len(ready)
    dirty: set[int] = set()  # units whose state changed since they last offered
    held: set[int] = set()
    # lock -> heap of (rank, unit) offers that need it; an offer is stale once its unit
    # started a task or has a better one (ranks are unique)
    offers: dict[int, list[tuple[int, int]]] = defaultdict(list)
    contested: set[int] = set()  # locks with new offers or just released
    events: list[tuple[float, int]] = []  # (end, task) of the running tasks
    finished = 0
    now = 0.0

    def run(u: int) -> None:
        """Start the best ready task of unit ``u`` now."""
        task = order[pop(ready[u])]
        idle[u] = False
        start[task] = now
        end[task] = now + dur[task]
        push(events, (end[task], task))

    freed = [t for t in range(n) if not waiting[t]]
    while True:
        while freed:
            task = freed.pop()
            u = unit[task]
            if u < 0:  # a barrier passes at once
                start[task] = end[task] = now
                finished += 1
                for s in succs[task]:
                    waiting[s] -= 1
                    if not waiting[s]:
                        freed.append(s)
            else:
                push(ready[u], rank[task])
                dirty.add(u)
        for u in dirty:
            if idle[u] and ready[u]:
                if locks is None:
                    run(u)
                else:
                    lock = locks[order[ready[u][0]]]
                    push(offers[lock], (ready[u][0], u))
                    contested.add(lock)
        dirty.clear()
        for lock in contested:
            candidates = offers[lock]
            while lock not in held and candidates:
                place, u = pop(candidates)
                if idle[u] and ready[u] and ready[u][0] == place:
                    held.add(lock)
                    run(u)
        contested.clear()
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] == now:  # tasks ending together, in any order
            task = pop(events)[1]
            finished += 1
            u = unit[task]
            idle[u] = True
            dirty.add(u)
            if locks is not None:
                held.discard(locks[task])
                contested.add(locks[task])
            for s in succs[task]:
                waiting[s] -= 1
                if not waiting[s]:
                    freed.append(s)
    if finished != n:
        raise AimccError(f"schedule: {n - finished} tasks could not run (dependency cycle)")
    return start, end


def _unit_order(unit: str) -> tuple[int, int, int]:
    kind, _, rest = unit.partition(":")
    index, _, lane = rest.partition(".")
    return _UNIT_KINDS.index(kind), int(index), int(lane or 0)


def to_chrome_trace(schedule: Schedule) -> dict[str, Any]:
    """Trace-event JSON for Perfetto: one process per unit kind, one thread per unit."""
    units = sorted({s.unit for s in schedule.slots}, key=_unit_order)
    tid = {unit: i for i, unit in enumerate(units)}
    events: list[dict[str, Any]] = []
    for pid, kind in enumerate(_UNIT_KINDS, start=1):
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": kind + "s"}})
    for unit in units:
        pid = _UNIT_KINDS.index(unit.partition(":")[0]) + 1
        events.append(
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid[unit], "args": {"name": unit}}
        )
    for s in schedule.slots:
        events.append(
            {
                "name": s.name,
                "cat": s.kind,
                "ph": "X",
                "ts": s.start_ns / 1e3,
                "dur": (s.end_ns - s.start_ns) / 1e3,
                "pid": _UNIT_KINDS.index(s.unit.partition(":")[0]) + 1,
                "tid": tid[s.unit],
                "args": {"chunk": s.chunk, "tokens": s.tokens},
            }
        )
    other = {
        "strategy": schedule.strategy,
        "makespan_ns": schedule.makespan_ns,
        "energy_nj": schedule.energy_nj,
        "chunk_per_layer": {str(k): v for k, v in schedule.chunk_per_layer.items()},
    }
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": other}


def condensation(
    nodes: list[int], edges: list[tuple[int, int]]
) -> tuple[dict[int, int], list[int], dict[int, list[int]]]:
    """networkx's ``condensation`` and ``lexicographical_topological_sort`` of a digraph, step for
    step (the same component numbers, so the same schedules): each node's strongly connected
    component, the components in topological order (smallest number first), and the components
    each one reads. Here because importing networkx costs ~0.25 s of every compile."""
    adj: dict[int, dict[int, None]] = {v: {} for v in nodes}
    for u, v in edges:
        adj.setdefault(u, {})[v] = None
        adj.setdefault(v, {})
    mapping: dict[int, int] = {}
    preorder: dict[int, int] = {}
    lowlink: dict[int, int] = {}
    stack: list[int] = []
    counter = count = 0
    neighbours = {v: iter(adj[v]) for v in adj}
    for source in adj:  # Tarjan's algorithm without recursion, as networkx writes it
        if source in mapping:
            continue
        queue = [source]
        while queue:
            v = queue[-1]
            if v not in preorder:
                counter += 1
                preorder[v] = counter
            done = True
            for w in neighbours[v]:
                if w not in preorder:
                    queue.append(w)
                    done = False
                    break
            if not done:
                continue
            lowlink[v] = preorder[v]
            for w in adj[v]:
                if w not in mapping:
                    other = lowlink[w] if preorder[w] > preorder[v] else preorder[w]
                    lowlink[v] = min(lowlink[v], other)
            queue.pop()
            if lowlink[v] == preorder[v]:
                mapping[v] = count
                while stack and preorder[stack[-1]] > preorder[v]:
                    mapping[stack.pop()] = count
                count += 1
            else:
                stack.append(v)
    reads: dict[int, set[int]] = {c: set() for c in range(count)}
    for u in adj:
        for v in adj[u]:
            if mapping[u] != mapping[v]:
                reads[mapping[v]].add(mapping[u])
    waiting = {c: len(r) for c, r in reads.items()}
    readers: dict[int, list[int]] = {c: [] for c in range(count)}
    for c, r in reads.items():
        for source in r:
            readers[source].append(c)
    ready = [c for c in range(count) if not waiting[c]]
    heapq.heapify(ready)
    order = []
    while ready:
        c = heapq.heappop(ready)
        order.append(c)
        for reader in readers[c]:
            waiting[reader] -= 1
            if not waiting[reader]:
                heapq.heappush(ready, reader)
    return mapping, order, {c: sorted(reads[c]) for c in order}
