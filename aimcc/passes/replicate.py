"""replicate: copy the slowest analog layers onto spare tiles and deal their tokens out.

Weight replication (PIMCOMP, Sun et al., arXiv 2307.01475): a layer whose tiles hold up the
pipeline gets copies of its weights on tiles placement left free, and each copy computes a
share of the tokens, so the layer's analog time shrinks by the number of copies. Chunk k of
the layer's tokens (the schedule's chunk size for the layer) runs on copy k mod copies; the
copies' outputs go to the layer's own cluster, which runs the rest of the layer as before.

The choice is the cost model's: simulate the pipeline (the schedule search's strategy and
chunk sizes for the unreplicated model); first balance it as PIMCOMP does (each layer on the
critical chain gets copies in proportion to its analog work, m for the slowest, m = 2, 3, ...
while the latency falls), then greedily: find the analog layer with the most time on a
critical chain of the timeline, give it one more copy (a run of free tiles, on its own chip
if it has room), and keep the copy when the latency falls. Copies that do not help at once
are kept tentatively for a few more steps (two projections feeding one attention only help
together), then dropped and the first of them not tried again. It stops when no tile is
free, no layer is left to try, or after SEARCH_BUDGET simulated tasks (compile time on big
models: one whose timeline alone exceeds the budget is left as it is). Layers not chunked over
the tokens (they run once), layers spanning chips, and the ``serial`` strategy (one task at a
time) gain nothing and are left alone.

The decision is the attribute ``replicas`` on the ``aimc.accumulate`` (schedule.REPLICAS_ATTR:
the first tile of each copy); the schedule, the backend (the binary's analog instruction
lists each copy's tiles and the chunk size) and the runtime (a PCM copy is its own devices)
read it. The module attribute ``aimc.unreplicated_ns`` records the latency the search started
from (for the report) and that the choice is made: IR that has it is left as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from aimcc.arch import Arch
from aimcc.cost import Stage, schedule
from aimcc.cost.model import ANALOG, stage_ns
from aimcc.cost.pipeline import critical
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.ir.attrs import int_array
from aimcc.passes.schedule import PIPELINES, REPLICAS_ATTR, replica_firsts, stage_builder

UNREPLICATED_ATTR = "aimc.unreplicated_ns"
# Tasks the search may simulate (~5 us of Python each): bounds compile time on big models
SEARCH_BUDGET = 60_000
GAIN = 1e-3  # a copy is kept when it cuts the latency by more than this fraction
LOOKAHEAD = 1  # copies kept tentatively without a gain before they are dropped
MISSES = 2  # copies dropped before the greedy step gives up


def copies_limit(value: str | int, flag: str = "replicate: replicas") -> int:
    """The most copies of a layer ``value`` allows (the original included): ``auto`` as many
    as tiles allow (0), ``off`` 1, or a whole number N >= 1."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    if text == "off":
        return 1
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise AimccError(f"{flag} '{value}': use auto, off or a copy count N >= 1 (1 is off)")


@dataclass(frozen=True)
class ReplicatePass(ModulePass):
    """``replicas``: auto, off, or N (at most N copies of a layer, the original included);
    ``pipeline``/``clusters_per_tile``/``tokens``: the schedule the choice optimises for (the
    schedule pass's options; the compile options set both passes)."""

    name = "replicate"

    replicas: str | int = "auto"
    pipeline: str = "auto"
    clusters_per_tile: int = 1
    tokens: int = 0

    def __post_init__(self) -> None:  # bad values are refused before any work
        copies_limit(self.replicas)
        if self.pipeline not in PIPELINES:
            raise AimccError(f"replicate: pipeline '{self.pipeline}': use {', '.join(PIPELINES)}")

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        limit = copies_limit(self.replicas)
        if limit == 1 or UNREPLICATED_ATTR in op.attributes:
            return  # off, or chosen before (textual IR from after this pass)
        arch = ctx.arch
        builder = stage_builder(op, arch, self.tokens)
        if builder is None or not builder.stages:
            return
        used = _used_tiles(op)
        free = sorted(set(range(arch.system_tiles)) - used)
        if not free:
            return
        stages, tokens = builder.stages, builder.tokens
        analog: dict[str, list[str]] = {}  # accumulation -> its analog stages
        owners: dict[str, AccumulateOp] = {}
        for s in stages:
            owner = builder.owner[s.name]
            if s.kind == ANALOG and isinstance(owner, AccumulateOp):
                analog.setdefault(str(id(owner)), []).append(s.name)
                owners[s.name] = owner
        eligible = [  # program order: the search is deterministic
            names[0]
            for names in analog.values()
            if len(names) == 1 and _chunked(stages, names[0], tokens)
        ]
        if not eligible:
            return
        found = schedule(
            stages,
            tokens,
            arch,
            strategy=self.pipeline,
            clusters_per_tile=self.clusters_per_tile,
        )
        ctx.searched = (stages, tokens, self.pipeline, self.clusters_per_tile, found)
        if found.strategy == "serial" or 3 * 2 * len(found.slots) > SEARCH_BUDGET:
            return  # nothing to gain, or not two steps within the budget (big models)
        search = _Search(stages, tokens, arch, found.strategy, self.clusters_per_tile,
                         found.chunk_per_layer)  # fmt: skip
        best = search.run(eligible, free, limit, {n: len(o.partials) for n, o in owners.items()})
        op.attributes[UNREPLICATED_ATTR] = IntegerAttr(round(found.makespan_ns), i64)
        for name, firsts in best.items():
            if not firsts:
                continue
            acc = owners[name]
            old = replica_firsts(acc)
            acc.attributes[REPLICAS_ATTR] = int_array([*old, *firsts])


class _Search:
    """The search over copies: one simulation per step, at the strategy and chunk sizes the
    schedule search chose for the unreplicated model."""

    def __init__(
        self,
        stages: list[Stage],
        tokens: int,
        arch: Arch,
        strategy: str,
        lanes: int,
        chunks: dict[int, int],
    ):
        self.stages, self.tokens, self.arch = stages, tokens, arch
        self.strategy, self.lanes, self.chunks = strategy, lanes, chunks
        self.tasks = 0
        self.position = {s.name: i for i, s in enumerate(stages)}

    def simulate(self, stages: list[Stage]) -> tuple[float, dict[str, float]]:
        makespan, on_chain, tasks = critical(
            stages,
            self.tokens,
            self.arch,
            strategy=self.strategy,
            clusters_per_tile=self.lanes,
            chunk_per_layer=self.chunks,
        )
        self.tasks += tasks
        return makespan, on_chain

    def with_copies(self, copies: dict[str, list[int]]) -> list[Stage]:
        """The stages with ``copies`` (stage -> first tiles of new copies) added."""
        stages = list(self.stages)
        for name, firsts in copies.items():
            if firsts:
                at = self.position[name]
                extra = tuple(f"tile:{t}" for t in firsts)
                stages[at] = replace(stages[at], replicas=(*stages[at].replicas, *extra))
        return stages

    def run(
        self, eligible: list[str], free: list[int], limit: int, sizes: dict[str, int]
    ) -> dict[str, list[int]]:
        """The copies to add: stage name -> first tile of each new copy.

        First the balance PIMCOMP aims for: each layer on the critical chain gets copies in
        proportion to its analog work, m for the slowest (m = 2, 3, ... while the latency
        falls and tiles last). Then, greedy on the critical chain of the best so far, one
        copy at a time.
        """
        per_chip = self.arch.tile.count
        have = {n: 1 + len(self.stages[self.position[n]].replicas) for n in eligible}
        work = {
            n: stage_ns(self.stages[self.position[n]], self.tokens, self.arch) for n in eligible
        }
        top = max(work.values())
        best_ns, best_chain = self.simulate(self.stages)
        budget = SEARCH_BUDGET
        chained = [n for n in eligible if best_chain.get(n, 0.0) > 0.0]  # the others wait
        best: tuple[dict[str, list[int]], list[int]] = ({n: [] for n in eligible}, free)
        m = max(have.values()) + 1
        while self.tasks < budget and (not limit or m <= limit):
            want = {n: math.ceil(m * work[n] / top - 1e-9) for n in chained}
            placed = _allocate(
                {n: max(0, want[n] - have[n]) for n in chained}, free, sizes, self.stages,
                self.position, per_chip,
            )  # fmt: skip
            if placed is None:
                break
            ns, chain = self.simulate(self.with_copies(placed[0]))
            if ns >= best_ns * (1 - GAIN):
                break
            best, best_ns, best_chain, m = placed, ns, chain, m + 1
        added, spare = {n: [] for n in eligible} | best[0], best[1]
        on_chain, tried, misses = best_chain, set(), 0
        tentative: list[str] = []
        state = (added, spare, on_chain)
        while self.tasks < budget and misses < MISSES:
            ranked = sorted(
                (n for n in eligible if n not in tried and on_chain.get(n, 0.0) > 0.0),
                key=lambda n: (-on_chain[n], self.position[n]),
            )
            choice = None
            for name in ranked:
                if limit and have[name] + len(added[name]) >= limit:
                    continue
                first = int(self.stages[self.position[name]].unit.partition(":")[2])
                run = _free_run(spare, sizes[name], first // per_chip, per_chip)
                if run is not None:
                    choice = (name, run)
                    break
            if choice is None:
                break
            name, run = choice
            added = {**added, name: [*added[name], run]}
            spare = [t for t in spare if not run <= t < run + sizes[name]]
            ns, on_chain = self.simulate(self.with_copies(added))
            tentative.append(name)
            if ns < best_ns * (1 - GAIN):
                best_ns, state, tentative = ns, (added, spare, on_chain), []
            elif len(tentative) > LOOKAHEAD:  # no gain: drop the copies, skip the first
                tried.add(tentative[0])
                added, spare, on_chain = state
                tentative, misses = [], misses + 1
        return state[0]


def _allocate(
    count: dict[str, int],
    free: list[int],
    sizes: dict[str, int],
    stages: list[Stage],
    position: dict[str, int],
    per_chip: int,
) -> tuple[dict[str, list[int]], list[int]] | None:
    """Tiles for ``count`` new copies of each stage (first tiles), and the tiles left; None
    when they do not all fit."""
    spare, placed = list(free), {}
    for name, n in count.items():
        placed[name] = []
        chip = int(stages[position[name]].unit.partition(":")[2]) // per_chip
        for _ in range(n):
            run = _free_run(spare, sizes[name], chip, per_chip)
            if run is None:
                return None
            placed[name].append(run)
            spare = [t for t in spare if not run <= t < run + sizes[name]]
    return placed, spare


def _chunked(stages: list[Stage], name: str, tokens: int) -> bool:
    stage = next(s for s in stages if s.name == name)
    return stage.dims.get("T", tokens) == tokens


def _free_run(free: list[int], size: int, chip: int, per_chip: int) -> int | None:
    """The first tile of the first run of ``size`` consecutive free tiles inside one chip,
    on ``chip`` if it has one, else on the nearest chip (lowest first)."""
    runs: dict[int, int] = {}
    start, length = None, 0
    for i, t in enumerate(free):
        if start is None or t != free[i - 1] + 1 or t % per_chip == 0:
            start, length = t, 0
        length += 1
        if length == size and start // per_chip not in runs:
            runs[start // per_chip] = start
    if not runs:
        return None
    nearest = min(runs, key=lambda c: (abs(c - chip), c))
    return runs[nearest]


def _used_tiles(op: ModuleOp) -> set[int]:
    """Tiles placement gave the layers, and those of copies recorded before."""
    used: set[int] = set()
    for o in op.walk():
        if isinstance(o, ProgramOp):
            if o.tile_id is None:
                raise AimccError("replicate: tiles are not placed (run 'place' first)")
            used.add(o.tile_id.value.data)
        elif isinstance(o, AccumulateOp):
            for first in replica_firsts(o):
                used.update(range(first, first + len(o.partials)))
    return used
