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
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import networkx as nx

from aimcc.arch import Arch
from aimcc.cost.model import (
    ANALOG,
    DIGITAL_KINDS,
    SEQUENCE_MIXING,
    Stage,
    dtype_bytes,
    output_elements,
    stage_ns,
    tcdm_bytes,
    transfer_ns,
    unit_power_w,
)
from aimcc.errors import AimccError

STRATEGIES = ("serial", "intra", "cross", "both")
# Tasks the chunk search may simulate (~0.5 s of Python): bounds compile time on big models.
SEARCH_BUDGET = 40_000
_UNIT_KINDS = ("tile", "cluster", "dma")


@dataclass(frozen=True)
class Slot:
    """One task on the timeline: a chunk of a stage, or a transfer (kind "transfer")."""

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
    candidates = {
        layer: _chunk_candidates(
            layer, [s for s in stages if layers[s.name] == layer], tokens, arch, chunk
        )
        for layer in sorted(set(layers.values()))
    }
    names = STRATEGIES if strategy == "auto" else (strategy,)
    found, choice = _search(stages, layers, tokens, arch, names, clusters_per_tile, candidates)
    return _simulate(stages, layers, tokens, arch, found, clusters_per_tile, choice)


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
    if strategy not in STRATEGIES:
        raise AimccError(f"recorded schedule strategy '{strategy}' unknown")
    layers = _check(stages, arch, clusters_per_tile)
    missing = sorted(set(layers.values()) - set(chunk_per_layer))
    if missing:
        raise AimccError(f"recorded schedule has no chunk size for layer {missing[0]}")
    return _simulate(stages, layers, tokens, arch, strategy, clusters_per_tile, chunk_per_layer)


def _check(stages: Sequence[Stage], arch: Arch, lanes: int) -> dict[str, int]:
    """Validate the stage list; return each stage's layer."""
    layers: dict[str, int] = {}
    for s in stages:
        unit_kind, _, index = s.unit.partition(":")
        want = "tile" if s.kind == ANALOG else "cluster"
        if s.kind != ANALOG and s.kind not in DIGITAL_KINDS:
            raise AimccError(f"stage '{s.name}': unknown kind '{s.kind}'")
        if unit_kind != want or not index.isdigit():
            raise AimccError(f"stage '{s.name}' ({s.kind}): unit '{s.unit}' must be '{want}:<n>'")
        if s.name in layers:
            raise AimccError(f"stage '{s.name}': name used twice")
        for dep in s.deps:
            if dep not in layers:
                raise AimccError(f"stage '{s.name}': dependency '{dep}' is not an earlier stage")
        layers[s.name] = int(index)
    clustered = {layers[s.name] for s in stages if s.kind != ANALOG}
    if len(clustered) * lanes > arch.cluster.count:
        raise AimccError(
            f"schedule: {len(clustered)} layers x {lanes} clusters per tile exceed "
            f"arch '{arch.name}' cluster.count = {arch.cluster.count}"
        )
    return layers


def _chunked(stage: Stage, tokens: int) -> bool:
    return stage.dims.get("T", tokens) == tokens


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

    def need(t: int) -> int:
        return sum(tcdm_bytes(s, t, arch) for s in digital if _chunked(s, tokens))

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
            f"layer {layer}: one token needs {need(1)} B of TCDM, the cluster has {capacity} B; "
            "split the layer over more tiles"
        )
    return fitting


def _search(
    stages: Sequence[Stage],
    layers: dict[str, int],
    tokens: int,
    arch: Arch,
    strategies: Sequence[str],
    lanes: int,
    candidates: dict[int, list[int]],
) -> tuple[str, dict[int, int]]:
    """The fastest (strategy, chunk per layer) found within SEARCH_BUDGET simulated tasks.

    Every strategy sweeps one chunk size for all layers first; then, best strategy first,
    each layer's size in turn is improved (coordinate descent) while the budget lasts. The
    budget counts tasks, not seconds, so the result does not depend on the machine.
    """
    seen: dict[tuple[str, tuple[int, ...]], float] = {}
    spent = 0

    def run(name: str, choice: dict[int, int]) -> float:
        nonlocal spent
        key = (name, tuple(choice[layer] for layer in candidates))
        if key not in seen:
            g, _, _ = _build(stages, layers, tokens, arch, name, lanes, choice)
            _, end = _list_schedule(g)
            seen[key] = max((e for e, u in zip(end, g.unit, strict=True) if u), default=0.0)
            spent += len(g.dur)
        return seen[key]

    def uniform(size: int) -> dict[int, int]:
        return {layer: max([t for t in c if t <= size] or c[:1]) for layer, c in candidates.items()}

    sizes = sorted({t for c in candidates.values() for t in c})
    starts = []
    for name in strategies:
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
                    if spent > SEARCH_BUDGET:
                        return best[2], best[3]
                    trial = {**choice, layer: t}
                    if run(name, trial) < run(name, choice):
                        choice = trial
                        if (run(name, choice), order) < best[:2]:
                            best = (run(name, choice), order, name, choice)
    return best[2], best[3]


@dataclass
class _Tasks:
    """The task graph of one simulation, as parallel lists (tasks are created in data order)."""

    name: list[str]
    kind: list[str]
    chunk: list[int]
    tokens: list[int]
    unit: list[str | None]  # None: a zero-time barrier
    lock: list[str | None]  # a resource shared by several units (the strategy's constraint)
    dur: list[float]
    prio: list[tuple[int, int, int]]
    preds: list[list[int]]
    layer: list[int]

    def add(self, **fields: Any) -> int:
        self.name.append(fields["name"])
        self.kind.append(fields["kind"])
        self.chunk.append(fields["chunk"])
        self.tokens.append(fields["tokens"])
        self.unit.append(fields["unit"])
        self.lock.append(fields["lock"])
        self.dur.append(fields["dur"])
        self.prio.append(fields["prio"])
        self.preds.append(fields["preds"])
        self.layer.append(fields["layer"])
        return len(self.dur) - 1


def _build(
    stages: Sequence[Stage],
    layers: dict[str, int],
    tokens: int,
    arch: Arch,
    strategy: str,
    lanes: int,
    chunk_per_layer: dict[int, int],
) -> tuple[_Tasks, float, dict[str, int]]:
    """Tasks, transfers and strategy constraints; also the critical path and tiles per unit."""
    g = _Tasks([], [], [], [], [], [], [], [], [], [])
    finish: list[float] = []  # earliest finish with unlimited units (critical path)
    tiles: dict[str, int] = {}
    # name -> (tasks in token order, chunked, chunk size): chunk i covers [i*size, (i+1)*size)
    by_stage: dict[str, tuple[list[int], bool, int]] = {}
    moved: dict[tuple[int, str], int] = {}
    nbytes = dtype_bytes(arch)
    index = {s.name: i for i, s in enumerate(stages)}
    # (stage, tokens) -> ns of a chunk / of its transfer: a few distinct sizes per stage
    durations: dict[tuple[int, int], float] = {}
    moves: dict[tuple[str, int], float] = {}

    locks = {
        layer: {"serial": "all", "cross": f"layer:{layer}"}.get(strategy)
        for layer in chunk_per_layer
    }

    def lock_of(layer: int) -> str | None:
        return locks[layer]

    def transfer(src: int, dest: str, layer: int) -> int:
        if (src, dest) not in moved:
            producer = stages[index[g.name[src]]]
            src_unit = g.unit[src] or ""
            engine = dest if dest.startswith("cluster") else src_unit
            dma = (
                "dma:" + engine.partition(":")[2]
                if engine.startswith("cluster")
                else f"dma:{layer}"
            )
            if (producer.name, g.tokens[src]) not in moves:
                size = output_elements(producer, g.tokens[src], arch) * nbytes
                moves[producer.name, g.tokens[src]] = transfer_ns(size, arch)
            moved[src, dest] = g.add(
                name=f"{g.name[src]}->{dest}",
                kind="transfer",
                chunk=g.chunk[src],
                tokens=g.tokens[src],
                unit=dma,
                lock=lock_of(layer),
                dur=moves[producer.name, g.tokens[src]],
                prio=(g.prio[src][0], g.prio[src][1], 1),
                preds=[src],
                layer=layer,
            )
            finish.append(finish[src] + g.dur[-1])
        return moved[src, dest]

    for position, s in enumerate(stages):
        layer = layers[s.name]
        chunked = _chunked(s, tokens)
        size = chunk_per_layer[layer] if chunked else s.dims["T"]
        unit_kind = s.unit.partition(":")[0]
        tasks: list[int] = []
        for k, first in enumerate(range(0, tokens if chunked else size, size)):
            stop = min(first + size, tokens) if chunked else size
            lane = k % lanes if unit_kind == "cluster" and chunked else 0
            unit = f"{s.unit}.{lane}" if lane else s.unit
            preds = []
            for j, dep in enumerate(s.deps):
                dep_tasks, dep_chunked, dep_size = by_stage[dep]
                if chunked and dep_chunked and not (s.kind in SEQUENCE_MIXING and j > 0):
                    dep_tasks = dep_tasks[first // dep_size : (stop - 1) // dep_size + 1]
                for src in dep_tasks:
                    preds.append(src if g.unit[src] == unit else transfer(src, unit, layer))
            if (position, stop - first) not in durations:
                durations[position, stop - first] = stage_ns(s, stop - first, arch)
            task = g.add(
                name=s.name,
                kind=s.kind,
                chunk=k,
                tokens=stop - first,
                unit=unit,
                lock=lock_of(layer),
                dur=durations[position, stop - first],
                prio=(first, position, 0),
                preds=preds,
                layer=layer,
            )
            finish.append(max((finish[p] for p in preds), default=0.0) + g.dur[task])
            tasks.append(task)
            if s.kind == ANALOG:
                tiles[unit] = max(tiles.get(unit, 1), s.dims.get("tiles", 1))
        by_stage[s.name] = (tasks, chunked, size)
    if strategy == "intra":
        _add_layer_barriers(g, layers, stages)
    return g, max(finish, default=0.0), tiles


def _add_layer_barriers(g: _Tasks, layers: dict[str, int], stages: Sequence[Stage]) -> None:
    """Each layer waits for every task of the layers it reads (cycles of layers merge)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(set(layers.values())))
    graph.add_edges_from(
        (layers[dep], layers[s.name])
        for s in stages
        for dep in s.deps
        if layers[dep] != layers[s.name]
    )
    merged = nx.condensation(graph)
    group = merged.graph["mapping"]
    real = len(g.dur)
    done = {
        node: g.add(
            name=f"barrier{node}",
            kind="barrier",
            chunk=0,
            tokens=0,
            unit=None,
            lock=None,
            dur=0.0,
            prio=(0, 0, 0),
            layer=-1,
            preds=[t for t in range(real) if group[g.layer[t]] == node],
        )
        for node in sorted(merged.nodes)
    }
    for t in range(real):
        g.preds[t].extend(done[p] for p in sorted(merged.predecessors(group[g.layer[t]])))


def _simulate(
    stages: Sequence[Stage],
    layers: dict[str, int],
    tokens: int,
    arch: Arch,
    strategy: str,
    lanes: int,
    chunk_per_layer: dict[int, int],
) -> Schedule:
    g, critical_path, tiles = _build(stages, layers, tokens, arch, strategy, lanes, chunk_per_layer)
    start, end = _list_schedule(g)
    # The strategies only add constraints to the dataflow, so its bound holds for all of them.
    flow = (
        g
        if strategy != "intra"
        else _build(stages, layers, tokens, arch, "both", lanes, chunk_per_layer)[0]
    )
    slots = sorted(
        (
            Slot(g.name[t], g.kind[t], g.chunk[t], g.tokens[t], unit, start[t], end[t])
            for t, unit in enumerate(g.unit)
            if unit is not None
        ),
        key=lambda s: (s.start_ns, _unit_order(s.unit), s.name, s.chunk),
    )
    makespan = max((s.end_ns for s in slots), default=0.0)
    busy: dict[str, float] = defaultdict(float)
    for s in slots:
        busy[s.unit] += s.end_ns - s.start_ns
    units = []
    for unit in sorted(busy, key=_unit_order):
        active_w, idle_w = unit_power_w(unit.partition(":")[0], arch)
        count = tiles.get(unit, 1)
        energy = count * (busy[unit] * active_w + (makespan - busy[unit]) * idle_w)
        units.append(UnitUse(unit, busy[unit], busy[unit] / makespan if makespan else 0.0, energy))
    return Schedule(
        strategy=strategy,
        clusters_per_tile=lanes,
        tokens=tokens,
        chunk_per_layer=dict(sorted(chunk_per_layer.items())),
        slots=tuple(slots),
        makespan_ns=makespan,
        units=tuple(units),
        energy_nj=sum(u.energy_nj for u in units),
        busy_bound_ns=max(busy.values(), default=0.0),
        critical_path_ns=critical_path,
        chain_bound_ns=_chain_bound(flow),
    )


def _chain_bound(g: _Tasks) -> float:
    """A lower bound on the makespan of the dataflow graph ``g`` (tasks in topological order).

    One unit runs its tasks one after another, none before its earliest start (head): so the
    unit is busy until at least ``r + work of its tasks with head >= r`` for every r (the
    one-machine relaxation), and the schedule lasts at least that plus the shortest chain
    after those tasks (tail). Heads are refined at joins (more than two inputs: keys,
    values, whole sequences) with the same bound over the join's ancestors, which captures
    attention waiting for every key and then running all queries on one cluster.
    """
    n = len(g.dur)
    head = [0.0] * n
    ancestors = [0] * n
    # The chunks of one stage share most inputs of a join (all keys): bound those once.
    shared: dict[str, set[int]] = {}
    for t in range(n):
        if len(g.preds[t]) > 2:
            shared[g.name[t]] = shared.get(g.name[t], set(g.preds[t])) & set(g.preds[t])
    refined: dict[str, float] = {}
    for t in range(n):
        start, members = 0.0, 0
        for p in g.preds[t]:
            start = max(start, head[p] + g.dur[p])
            members |= ancestors[p] | (1 << p)
        ancestors[t] = members
        name = g.name[t]
        if len(g.preds[t]) > 2:
            if name not in refined:
                common = 0
                for p in shared[name]:
                    common |= ancestors[p] | (1 << p)
                chosen = []
                while common:
                    low = common & -common
                    chosen.append(low.bit_length() - 1)
                    common ^= low
                # Each ancestor's shortest way on to the join: the longest chain from its end.
                to_join = dict.fromkeys(chosen, 0.0)
                for a in reversed(chosen):
                    for p in g.preds[a]:
                        to_join[p] = max(to_join[p], g.dur[a] + to_join[a])
                refined[name] = _one_machine(g, head, chosen, to_join)
            start = max(start, refined[name])
        head[t] = start
    tail = [0.0] * n  # the longest chain after a task, with unlimited units
    for t in range(n - 1, -1, -1):
        for p in g.preds[t]:
            tail[p] = max(tail[p], g.dur[t] + tail[t])
    path = max((head[t] + g.dur[t] + tail[t] for t in range(n)), default=0.0)
    return max(path, _one_machine(g, head, range(n), tail))


def _one_machine(
    g: _Tasks, head: list[float], tasks: Iterable[int], tail: Mapping[int, float] | list[float]
) -> float:
    """max over units and r of r + work with head >= r (+ the shortest tail among them)."""
    by_unit: dict[str | None, list[int]] = defaultdict(list)
    for t in tasks:
        by_unit[g.unit[t]].append(t)
    bound = 0.0
    for unit, members in by_unit.items():
        if unit is None:
            continue
        members.sort(key=lambda t: head[t], reverse=True)
        work, shortest = 0.0, float("inf")
        for t in members:
            work += g.dur[t]
            shortest = min(shortest, tail[t])
            bound = max(bound, head[t] + work + shortest)
    return bound


def _list_schedule(g: _Tasks) -> tuple[list[float], list[float]]:
    """Event-driven non-delay list scheduling: a free unit starts its best ready task."""
    n = len(g.dur)
    succs: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(p) for p in g.preds]
    for task, preds in enumerate(g.preds):
        for p in preds:
            succs[p].append(task)
    start, end = [0.0] * n, [0.0] * n
    ready: dict[str, list[tuple[tuple[int, int, int], int]]] = defaultdict(list)
    lock_units: dict[str, set[str]] = defaultdict(set)
    for task in range(n):
        if g.lock[task] is not None and g.unit[task] is not None:
            lock_units[g.lock[task]].add(g.unit[task])
    busy_units: set[str] = set()
    busy_locks: set[str] = set()
    dirty: set[str] = set()
    events: list[tuple[float, int]] = []
    finished = 0

    def release(tasks: list[int], now: float) -> None:
        nonlocal finished
        while tasks:
            task = tasks.pop()
            unit = g.unit[task]
            if unit is None:  # a barrier passes at once
                start[task] = end[task] = now
                finished += 1
                tasks.extend(_satisfied(task, succs, waiting))
            else:
                heapq.heappush(ready[unit], (g.prio[task], task))
                dirty.add(unit)

    release([t for t in range(n) if not waiting[t]], 0.0)
    now = 0.0
    while True:
        offers = sorted((ready[u][0], u) for u in dirty if u not in busy_units and ready[u])
        dirty.clear()
        for (_, task), unit in offers:
            lock = g.lock[task]
            if lock in busy_locks:
                continue
            heapq.heappop(ready[unit])
            start[task], end[task] = now, now + g.dur[task]
            busy_units.add(unit)
            if lock is not None:
                busy_locks.add(lock)
            heapq.heappush(events, (end[task], task))
        if not events:
            break
        now = events[0][0]
        freed: list[int] = []
        while events and events[0][0] == now:
            task = heapq.heappop(events)[1]
            finished += 1
            unit, lock = g.unit[task], g.lock[task]
            busy_units.discard(unit)
            dirty.add(unit)
            if lock is not None:
                busy_locks.discard(lock)
                dirty |= lock_units[lock]
            freed.extend(_satisfied(task, succs, waiting))
        release(freed, now)
    if finished != n:
        raise AimccError(f"schedule: {n - finished} tasks could not run (dependency cycle)")
    return start, end


def _satisfied(task: int, succs: list[list[int]], waiting: list[int]) -> list[int]:
    out = []
    for s in succs[task]:
        waiting[s] -= 1
        if not waiting[s]:
            out.append(s)
    return out


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


def plot_gantt(schedule: Schedule, path: str | Path | IO[bytes]) -> None:
    """A Gantt chart of the timeline, one row per unit, one colour per kind (Agg, no display)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    units = sorted({s.unit for s in schedule.slots}, key=_unit_order)
    kinds = sorted({s.kind for s in schedule.slots})
    palette = colormaps["tab20"]
    colour = {kind: palette(i % 20) for i, kind in enumerate(kinds)}
    row = {unit: i for i, unit in enumerate(units)}
    fig = Figure(figsize=(12, 1.5 + 0.35 * len(units)))
    ax = fig.add_subplot()
    for s in schedule.slots:
        width = (s.end_ns - s.start_ns) / 1e3
        ax.barh(row[s.unit], width, left=s.start_ns / 1e3, color=colour[s.kind], height=0.8)
    ax.set_yticks(range(len(units)), units)
    ax.invert_yaxis()
    ax.set_xlabel("time (us)")
    ax.set_title(
        f"{schedule.strategy}: {schedule.makespan_ns / 1e3:.2f} us, "
        f"chunks {schedule.chunk_per_layer}, {schedule.clusters_per_tile} cluster(s)/tile"
    )
    ax.legend(
        handles=[Patch(color=colour[k], label=k) for k in kinds], loc="upper right", fontsize=7
    )
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
