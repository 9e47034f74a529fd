"""Architecture files: every hardware number the compiler and runtime use, read from TOML.

A preset lives in ``presets/NAME.toml`` and cites the source of each number in a comment.
Code reads an :class:`Arch`; it never hard-codes a hardware parameter.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from aimcc.errors import AimccError

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_ARCH = "paper-512"
MAX_INT = 2**31 - 1  # counts and sizes; larger values overflow the cost model's and runtime's sizes
# cluster.dtype, the clusters' number format -> the element type of the RISC-V kernels' float
# data (backends/signatures.py, which gives its size): fp16 in Zfh, fp32 in F
CLUSTER_DTYPES = {"fp16": "f16", "fp32": "f32"}


@dataclass(frozen=True)
class Mapping:
    """How weights become conductances when a tile is programmed."""

    clip_sigma: float
    channelwise: bool
    g_max_us: float


@dataclass(frozen=True)
class Dac:
    bits: int
    inp_bound: float
    noise_management: str


@dataclass(frozen=True)
class Adc:
    bits: int
    out_bound: float
    out_noise: float
    bound_management: str
    bm_max_factor: float
    bm_max_resolution: float


@dataclass(frozen=True)
class Pcm:
    """Coefficients of the PCM statistical model (aihwkit PCMLikeNoiseModel)."""

    t0_s: float
    t_read_s: float
    prog_coeff: tuple[float, ...]
    drift_mu: tuple[float, ...]
    drift_sigma: tuple[float, ...]
    read_q: tuple[float, ...]
    compensation: str
    prog_coeff_g_max_us: float
    drift_x_floor: float
    readout_floor: float


@dataclass(frozen=True)
class Tile:
    rows: int
    cols: int
    count: int
    integration_time_ns: float
    postprocess_cycles: int
    postprocess_units: int
    clock_mhz: float
    power_w: float
    idle_power_w: float
    area_mm2: float
    mapping: Mapping
    dac: Dac
    adc: Adc
    pcm: Pcm


@dataclass(frozen=True)
class Cluster:
    count: int
    compute_cores: int
    dma_cores: int
    clock_mhz: float
    tcdm_kib: int
    dma_bytes_per_cycle: int
    dtype: str
    matrix_engine: bool
    engine_fma_units: int
    power_w: float
    engine_power_w: float
    idle_power_w: float
    area_mm2: float
    core_fma_lanes: int
    fpu_utilisation: float
    kernel_call_cycles: int
    dma_setup_cycles: int
    transcendental_ops: int
    divsqrt_cycles: int

    @property
    def kernel_dtype(self) -> str:
        """The element type of the kernels' float data (``f16`` or ``f32``)."""
        return CLUSTER_DTYPES[self.dtype]


@dataclass(frozen=True)
class Link:
    """Chip-to-chip links of a multi-chip system: a model that needs more tiles than one chip
    has is cut into pipeline stages, one per chip, and activations cross these links."""

    chips: int  # chips in the system; 0: the fewest that hold the model (placement decides)
    bytes_per_ns: float  # one link, one direction (GB/s)
    latency_ns: float
    energy_pj_per_bit: float


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    tile: Tile
    cluster: Cluster
    link: Link

    @property
    def chips(self) -> int:
        """Chips in the system (1 until placement has chosen, when the file says 0)."""
        return max(1, self.link.chips)

    @property
    def system_tiles(self) -> int:
        return self.tile.count * self.chips

    @property
    def system_clusters(self) -> int:
        return self.cluster.count * self.chips

    def chip_of(self, unit: str) -> int:
        """The chip of a cost-model unit (``tile:i``, ``cluster:i[.lane]``, ``dma:i``): tiles
        and clusters are numbered chip after chip."""
        kind, _, rest = unit.partition(":")
        index = int(rest.partition(".")[0])
        return index // (self.tile.count if kind == "tile" else self.cluster.count)

    def cluster_of_tile(self, tile_id: int) -> int:
        """The cluster paired with a tile: the same index on the tile's own chip."""
        chip, local = divmod(tile_id, self.tile.count)
        return chip * self.cluster.count + local % self.cluster.count

    def with_chips(self, chips: int) -> Arch:
        return dataclasses.replace(self, link=dataclasses.replace(self.link, chips=chips))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_arch(name_or_path: str = DEFAULT_ARCH, overrides: list[str] | None = None) -> Arch:
    """Load a preset by name or a TOML file by path, then apply ``section.key=value`` overrides."""
    raw, path = _read_toml(name_or_path)
    for item in overrides or []:
        _apply_override(raw, item)
    return _build(Arch, raw, str(path))


def _read_toml(name_or_path: str) -> tuple[dict[str, Any], Path]:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise AimccError(
                f"unknown architecture '{name_or_path}': use a preset "
                f"({', '.join(preset_names())}) or a path to a .toml file"
            )
    elif not path.is_file():
        raise AimccError(f"{path}: architecture file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AimccError(f"{path}: not a text file (architecture files are UTF-8 TOML)") from None
    except OSError as exc:
        raise AimccError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AimccError(f"{path}: not valid TOML: {exc}") from None
    return raw, path


def arch_changes(arch: Arch) -> tuple[str | None, dict[str, Any]]:
    """``arch`` as a preset and the values that differ from it, by dotted key (what
    ``--arch PRESET --set KEY=VALUE`` would give): the preset named as the arch is, if there is
    one, else none and every value. The preset's file keeps the sources of its numbers."""
    preset = arch.name if arch.name in preset_names() else None
    base = _flatten(load_arch(preset).to_dict()) if preset else {}
    values = _flatten(arch.to_dict())
    return preset, {k: v for k, v in values.items() if k not in base or base[k] != v}


def arch_from_changes(
    preset: str | None, values: dict[str, Any], overrides: list[str] | None = None, where: str = ""
) -> Arch:
    """The inverse of :func:`arch_changes`, then ``--set`` overrides; checked as a file is."""
    try:
        raw = _read_toml(preset)[0] if preset is not None else {}
    except AimccError as exc:
        raise AimccError(f"{where}: {exc}") from None
    for key, value in values.items():
        *sections, leaf = key.split(".")
        table = raw
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise AimccError(f"{where}: '{key}' is not an architecture value")
        if preset is not None and leaf not in table:
            raise AimccError(f"{where}: no key '{key}' in the architecture")
        table[leaf] = value
    for item in overrides or []:
        _apply_override(raw, item)
    return _build(Arch, raw, where)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def arch_from_dict(raw: dict[str, Any]) -> Arch:
    """Rebuild an :class:`Arch` from :meth:`Arch.to_dict` output (as stored in a binary)."""
    return _build(Arch, raw, "<embedded arch>")


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise AimccError(f"bad --set '{item}': expected SECTION.KEY=VALUE, e.g. tile.count=256")
    *sections, leaf = key.strip().split(".")
    table = raw
    for section in sections:
        table = table.get(section)
        if not isinstance(table, dict):
            raise AimccError(f"bad --set '{item}': no section '{section}' in the architecture")
    if leaf not in table:
        raise AimccError(f"bad --set '{item}': no key '{key}' in the architecture")
    try:
        table[leaf] = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        table[leaf] = text.strip()  # bare string


def _build(cls: type, raw: dict[str, Any], where: str, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise AimccError(f"{where}: unknown architecture key '{prefix}{unknown[0]}'")
    values = {}
    for name in names:
        if name not in raw:
            raise AimccError(f"{where}: missing architecture key '{prefix}{name}'")
        values[name] = _coerce(hints[name], raw[name], where, f"{prefix}{name}")
    arch = cls(**values)
    _check_ranges(arch, where, prefix)
    return arch


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise AimccError(f"{where}: '{key}' must be a table")
        return _build(hint, value, where, key + ".")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # tuple[float, ...]
        ok = isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    if not ok:
        raise AimccError(f"{where}: '{key}' has the wrong type ({value!r})")
    return value


def _check_ranges(obj: Any, where: str, prefix: str) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        for v in numbers:
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if not math.isfinite(v):
                raise AimccError(f"{where}: '{prefix}{f.name}' must be finite ({v})")
            if isinstance(value, int | float) and v < 0:
                raise AimccError(f"{where}: '{prefix}{f.name}' must not be negative ({v})")
            if isinstance(v, int) and v > MAX_INT:
                raise AimccError(f"{where}: '{prefix}{f.name}' is absurdly large ({v} > {MAX_INT})")
    if isinstance(obj, Cluster) and obj.dtype not in CLUSTER_DTYPES:
        raise AimccError(
            f"{where}: '{prefix}dtype' must be one of {', '.join(CLUSTER_DTYPES)} ({obj.dtype!r})"
        )
    if isinstance(obj, Tile | Cluster) and obj.count < 1:
        raise AimccError(f"{where}: '{prefix}count' must be at least 1")
    if isinstance(obj, Link) and obj.bytes_per_ns <= 0:
        raise AimccError(f"{where}: '{prefix}bytes_per_ns' must be positive")
    if isinstance(obj, Tile) and (obj.rows < 1 or obj.cols < 1):
        raise AimccError(f"{where}: tile rows and cols must be at least 1")
    if isinstance(obj, Dac | Adc) and not 1 <= obj.bits <= 24:
        raise AimccError(f"{where}: '{prefix}bits' must be between 1 and 24 ({obj.bits})")
