"""Unit costs: how long one chunk of one stage takes on its tile or cluster, and what it draws.

Everything is physical: cycles follow from the arithmetic of the stage and the parameters of
``arch.tile`` / ``arch.cluster`` (each cited in the preset), never from per-shape fits.

Analog tile (HARP form: docs/REFERENCES.md "Tile latency", from Li et al., arXiv 2411.17367):
one token costs ``t_int + (postprocess_cycles + ceil(cols / postprocess_units)) / clock``,
where ``cols`` are the columns one tile post-processes (``min(N, tile.cols)``). A layer's tiles
run in parallel, so the layer costs the same as one tile; a chunk of t tokens costs t times that.

RISC-V cluster: a kernel call costs ``kernel_call_cycles`` plus its arithmetic. The kernels
give each compute core whole rows (tokens, or (head, token) rows for attention), so a chunk
of t rows takes ``ceil(t / compute_cores)`` rounds of one row's work. One row's work is its
FMA-equivalent operations over ``core_fma_lanes * fpu_utilisation`` lanes, plus the
non-pipelined divisions/square roots (``divsqrt_cycles`` each); exp/erf/tanh count
``transcendental_ops``. With ``matrix_engine`` the multiply-accumulates of the chunk go to
the engine's ``engine_fma_units`` instead. Moving data between units is a separate DMA stage
(``dma_setup_cycles + bytes / dma_bytes_per_cycle``) on the cluster's DMA core, which runs
beside the compute cores.

Calibration (docs/REFERENCES.md "Calibration data": Li et al., arXiv 2411.17367, RTL
simulation of a 128 x 128 layer with rank-8 LoRA, the PMCA time of one chunk over the tile
time of one chunk). Per token the tile costs t_int + 10 cycles
(8 + 128/64) = 148/276/532 ns at 128/256/512 ns. The LoRA of one row costs
K*R = 1024 MACs (X.A) plus R*N + N = 1152 operations (.B and the add). Writing the cluster
time of a chunk as ``2 c + rounds(t) * w``:

* the two t = 8 points (one row per core) give 0.63 * 8 * 276 ns ~ 0.32 * 8 * 532 ns ~ 1370 ns
  = 2c + w ~ 685 cycles. They agree with each other only because the cluster time is
  independent of t_int: the ratio falls with the integration time because the tile gets
  slower, not the cluster;
* the t = 128 point (16 rows per core) gives 1.04 * 128 * 148 ns = 19.7 us = 2c + 16 w
  ~ 9850 cycles.

So w ~ 611 cycles per row, i.e. 2176 operations at 3.56 per cycle and core: a 4-lane fp16 FPU
at ~0.9 utilisation; and c ~ 37 cycles per call (a barrier and loop set-up). The preset rounds
these to 4 lanes, 0.9 and 40 cycles, which give 1.03 / 0.62 / 0.32.

"Best chunk size" is the chunk that maximises a long sequence's pipeline throughput (the slower
of tile and cluster per token), the smaller one on ties (shorter fill and drain, less TCDM).
Chunks are multiples of the core count (a smaller chunk idles cores and costs a full round).
At 256 and 512 ns the cluster already hides behind the tile at t = 8, so 8 is best; at 128 ns
it never does (1.03 even with all overhead amortised), so the largest chunk whose working set
fits the 128 KiB TCDM wins: 128, since 256 needs 4096 + 528 * 256 B > 128 KiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aimcc.arch import Arch
from aimcc.backends.signatures import DTYPE_BYTES
from aimcc.errors import AimccError

ANALOG = "analog_mvm"
DIGITAL_KINDS = (
    "lora_xa",
    "lora_b_add",
    "matmul",
    "qk",
    "av",
    "softmax",
    "layer_norm",
    "rms_norm",
    "gelu_erf",
    "gelu_tanh",
    "silu",
    "add",
    "bias_add",
    "accumulate",
    "gather",
    "elementwise",
)
# Kinds that read the whole sequence through their second operand (keys, values).
SEQUENCE_MIXING = ("qk", "av")


@dataclass(frozen=True)
class Stage:
    """One unit of work of the compiled program, in program order.

    ``dims`` of analog_mvm: K, N (layer rows/cols), tiles. Digital: T (tokens; the stage is
    chunked when T is absent or equals the sequence length, else it runs once), plus
    lora_xa K R; lora_b_add R N; matmul K N; qk/av S D [H] with deps (queries, keys) /
    (probabilities, values); softmax N [H]; norms, activations, add, bias_add, gather N;
    accumulate N P (partial sums); elementwise elements (per token) [ops per element].
    ``replicas``: other tiles holding copies of an analog stage's weights (the replicate
    pass); its chunks are dealt round robin to ``unit`` and the replicas.
    """

    name: str
    kind: str
    dims: dict[str, int]
    deps: tuple[str, ...]
    unit: str
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kernel:
    """The arithmetic of one chunk of a digital stage: what the cycle count is made of."""

    rows: int  # independent rows the cores share
    macs_per_row: int  # multiply-accumulates (matrix-engine eligible)
    ops_per_row: int  # other vectorisable FMA-equivalent operations
    divsqrt_per_row: int  # non-pipelined divisions / square roots
    dma_bytes: int  # bytes the kernel itself streams (gather)
    tcdm_words: int  # working set in TCDM, in elements of the cluster dtype
    out_per_token: int  # output elements per token (for transfers)
    streamed: tuple[int, int] = (0, 0)  # (transfers, bytes) the DMA core streams meanwhile
    # Part of tcdm_words that only lives during the call and does not grow with the chunk: the
    # double buffers the DMA core streams keys/values or weight panels through.
    workspace_words: int = 0


def dim(stage: Stage, key: str, default: int | None = None) -> int:
    value = stage.dims.get(key, default)
    if value is None:
        raise AimccError(f"stage '{stage.name}' ({stage.kind}): missing dimension '{key}'")
    return value


def dtype_bytes(arch: Arch) -> int:
    """Bytes of one element of the cluster's number format: the generated kernels' (one size,
    `signatures.DTYPE_BYTES`, for this model's chunks and the kernels' TCDM pieces)."""
    return DTYPE_BYTES[arch.cluster.kernel_dtype]


def kernel(stage: Stage, tokens: int, arch: Arch) -> Kernel:
    """Rows, operations and working set of ``tokens`` tokens of a digital stage."""
    t, kind = tokens, stage.kind
    trans = arch.cluster.transcendental_ops
    if kind in ("lora_xa", "matmul"):
        k, n = dim(stage, "K"), dim(stage, "R" if kind == "lora_xa" else "N")
        weight_bytes = k * n * dtype_bytes(arch)
        quarter = arch.cluster.tcdm_kib * 256  # bytes
        if kind == "matmul" and weight_bytes > 2 * quarter:
            # Too big to stay in TCDM: the DMA core streams column panels of a quarter of
            # the TCDM each, double-buffered, while the cores multiply the previous panel.
            panel = k * max(1, quarter // (k * dtype_bytes(arch)))
            streamed = (math.ceil(k * n / panel), weight_bytes)
            return Kernel(t, k * n, 0, 0, 0, 2 * panel + t * (k + n), n, streamed, 2 * panel)
        return Kernel(t, k * n, 0, 0, 0, k * n + t * (k + n), n)
    if kind == "lora_b_add":  # XA . B added into the tile's output in place (XA: lora_xa's)
        r, n = dim(stage, "R"), dim(stage, "N")
        return Kernel(t, r * n, n, 0, 0, r * n + t * n, n)
    if kind in SEQUENCE_MIXING:
        # One row per (head, query). Heads go through TCDM one at a time, double-buffered:
        # the DMA core streams each head's keys/values in while the cores work on the last.
        s, d, h = dim(stage, "S"), dim(stage, "D"), dim(stage, "H", 1)
        width_in, width_out = (d, s) if kind == "qk" else (s, d)
        words = 2 * (s * d + t * (width_in + width_out))
        streamed = (h, h * s * d * dtype_bytes(arch))
        return Kernel(t * h, s * d, 0, 0, 0, words, h * width_out, streamed, 2 * s * d)
    if kind == "softmax":  # max, subtract, exp, sum, scale by one reciprocal per row
        n, h = dim(stage, "N"), dim(stage, "H", 1)  # one head at a time, double-buffered
        return Kernel(t * h, 0, n * (trans + 4), 1, 0, 4 * t * n, h * n)
    n = dim(stage, "N") if kind != "elementwise" else dim(stage, "elements")
    per_element = {
        "layer_norm": (5, 2, 2 * n),  # ops, divsqrt per row (sqrt, div), resident gamma+beta
        "rms_norm": (3, 2, n),
        "gelu_erf": (trans + 4, 0, 0),
        "gelu_tanh": (trans + 7, 0, 0),
        "silu": (trans + 3, 0, 0),  # x * sigmoid(x), sigmoid through tanh
        "add": (1, 0, 0),
        "bias_add": (1, 0, n),
        "accumulate": (dim(stage, "P", 2) - 1, 0, 0),
        "gather": (0, 0, 0),
        "elementwise": (dim(stage, "ops", 1), 0, 0),
    }
    if kind not in per_element:
        raise AimccError(f"stage '{stage.name}': unknown kind '{kind}'")
    ops, divsqrt, resident = per_element[kind]
    inputs = {"add": 2, "accumulate": dim(stage, "P", 2)}.get(kind, 1)
    dma = t * n * dtype_bytes(arch) if kind == "gather" else 0
    return Kernel(t, 0, ops * n, divsqrt, dma, resident + t * n * (inputs + 1), n)


def tile_token_ns(stage: Stage, arch: Arch) -> float:
    """One token through a layer's tiles (HARP: t_int + (pp latency + cols / pp units) cycles)."""
    tile = arch.tile
    cols = min(dim(stage, "N"), tile.cols)
    cycles = tile.postprocess_cycles + math.ceil(cols / tile.postprocess_units)
    return tile.integration_time_ns + cycles * 1e3 / tile.clock_mhz


def cluster_cycles(stage: Stage, tokens: int, arch: Arch) -> float:
    """Cycles of one kernel call on ``tokens`` tokens: call overhead + rounds of row work."""
    cl = arch.cluster
    if not 0.0 < cl.fpu_utilisation <= 1.0 or cl.core_fma_lanes < 1 or cl.compute_cores < 1:
        raise AimccError(
            f"arch '{arch.name}': cluster needs cores, FMA lanes, 0 < utilisation <= 1"
        )
    k = kernel(stage, tokens, arch)
    lanes = cl.core_fma_lanes * cl.fpu_utilisation
    rounds = math.ceil(k.rows / cl.compute_cores)
    row_ops = k.ops_per_row
    engine = 0.0
    if cl.matrix_engine and k.macs_per_row:
        engine = k.rows * k.macs_per_row / cl.engine_fma_units
    else:
        row_ops += k.macs_per_row
    cycles = cl.kernel_call_cycles + engine + rounds * (row_ops / lanes)
    cycles += rounds * k.divsqrt_per_row * cl.divsqrt_cycles
    transfers, streamed = k.streamed
    if transfers:  # overlapped with the compute cores: the slower of the two counts
        dma = transfers * cl.dma_setup_cycles + streamed / cl.dma_bytes_per_cycle
        cycles = cl.kernel_call_cycles + max(cycles - cl.kernel_call_cycles, dma)
    if k.dma_bytes:
        cycles += cl.dma_setup_cycles + k.dma_bytes / cl.dma_bytes_per_cycle
    return cycles


def stage_ns(stage: Stage, tokens: int, arch: Arch) -> float:
    """Time of one chunk of ``tokens`` tokens of ``stage`` on its unit."""
    if stage.kind == ANALOG:
        return tokens * tile_token_ns(stage, arch)
    return cluster_cycles(stage, tokens, arch) * 1e3 / arch.cluster.clock_mhz


def transfer_ns(nbytes: int, arch: Arch) -> float:
    """One DMA transfer between units: set-up plus bytes over the DMA bandwidth."""
    cl = arch.cluster
    return (cl.dma_setup_cycles + nbytes / cl.dma_bytes_per_cycle) * 1e3 / cl.clock_mhz


def link_ns(nbytes: int, hops: int, arch: Arch) -> float:
    """A transfer between chips: each link's latency, then bytes at the link's bandwidth
    (docs/REFERENCES.md "Chip-to-chip link")."""
    return hops * arch.link.latency_ns + nbytes / arch.link.bytes_per_ns


def link_nj(nbytes: int, hops: int, arch: Arch) -> float:
    """Energy of a transfer between chips: bits moved x energy per bit, per link crossed."""
    return hops * nbytes * 8 * arch.link.energy_pj_per_bit * 1e-3


def output_elements(stage: Stage, tokens: int, arch: Arch) -> int:
    """Elements a chunk of ``stage`` produces (what a transfer of its result moves)."""
    if stage.kind == ANALOG:
        return tokens * dim(stage, "N")
    return tokens * kernel(stage, 1, arch).out_per_token


def tcdm_bytes(stage: Stage, tokens: int, arch: Arch) -> int:
    """TCDM a chunk of a digital stage needs: resident weights + the chunk's inputs and outputs.

    For LoRA this is the paper's (t*M + M*R + R*N) * 2 B (docs/REFERENCES.md "Digital cluster",
    Li et al. arXiv 2411.17367) plus the buffers X.A (t*R) and the
    tile output the adapter is added to (t*N).
    """
    return kernel(stage, tokens, arch).tcdm_words * dtype_bytes(arch)


def tcdm_parts(stage: Stage, tokens: int, arch: Arch) -> tuple[int, int, int]:
    """TCDM bytes of a chunk as (resident, workspace, chunk buffers): resident weights stay
    across calls; the workspace (streamed double buffers) lives only during the call; the
    chunk's inputs and outputs grow with ``tokens``."""
    k = kernel(stage, tokens, arch)
    size = dtype_bytes(arch)
    fixed = kernel(stage, 0, arch).tcdm_words
    return (
        (fixed - k.workspace_words) * size,
        k.workspace_words * size,
        (k.tcdm_words - fixed) * size,
    )


def unit_power_w(unit_kind: str, arch: Arch) -> tuple[float, float]:
    """(busy, idle) power of one tile, one cluster, or one cluster's DMA core."""
    cl = arch.cluster
    cluster_w = cl.engine_power_w if cl.matrix_engine else cl.power_w
    if unit_kind == "tile":
        return arch.tile.power_w, arch.tile.idle_power_w
    if unit_kind == "cluster":
        return cluster_w, cl.idle_power_w
    # The DMA core is one of the cluster's cores: it draws its share of the cluster's power.
    return cluster_w / (cl.compute_cores + cl.dma_cores), 0.0
