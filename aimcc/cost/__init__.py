"""Latency and energy model of AIMC tiles and RISC-V clusters, and the pipeline scheduler."""

from aimcc.cost.gantt import plot_gantt
from aimcc.cost.model import Stage, stage_ns, tcdm_bytes, tile_token_ns, transfer_ns
from aimcc.cost.pipeline import (
    STRATEGIES,
    Schedule,
    Slot,
    UnitUse,
    replay,
    schedule,
    to_chrome_trace,
)

__all__ = [
    "STRATEGIES",
    "Schedule",
    "Slot",
    "Stage",
    "UnitUse",
    "plot_gantt",
    "replay",
    "schedule",
    "stage_ns",
    "tcdm_bytes",
    "tile_token_ns",
    "to_chrome_trace",
    "transfer_ns",
]
