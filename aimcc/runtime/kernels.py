"""Digital kernels of the runtime (torch), one per `digital.kernel` kind.

Generic ``onnx.<OpType>`` kernels run through :mod:`aimcc.runtime.onnx_ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Args = list[torch.Tensor | None]
KernelImpl = Callable[[Args, dict[str, Any]], list[torch.Tensor]]


def _matmul(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    return [torch.matmul(args[0], args[1])]


def _lora(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    x, y, a, b = args
    return [y + torch.matmul(torch.matmul(x, a), b) * params["scale"]]


def _bias_add(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    return [args[0] + args[1]]


def _attention(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    """Whole, or (params ``head_clusters``, the compiler's head split) one equal group of
    heads per cluster, concatenated: each group reads only its heads of q, k, v and mask."""
    groups = len(params.get("head_clusters") or (0,))
    heads = args[0].shape[-3] if args[0].dim() >= 3 else 1
    if groups < 2 or heads % groups:
        return [_attention_heads(args, params["scale"])]
    size = heads // groups

    def part(t: torch.Tensor | None, j: int) -> torch.Tensor | None:
        if t is None or t.dim() < 3 or t.shape[-3] != heads:
            return t  # broadcast over heads
        return t[..., j * size : (j + 1) * size, :, :]

    outs = [_attention_heads([part(a, j) for a in args], params["scale"]) for j in range(groups)]
    return [torch.cat(outs, dim=-3)]


def _attention_heads(args: Args, scale: float) -> torch.Tensor:
    q, kt, v = args[0], args[1], args[2]
    scores = torch.matmul(q, kt) * scale
    if len(args) > 3 and args[3] is not None:
        scores = scores + args[3]
    probs = torch.softmax(scores, dim=-1)
    # fully masked rows: exporters' guard (Where(IsNaN(p), 0, p)) gives zeros, so do we
    return torch.matmul(torch.nan_to_num_(probs, nan=0.0), v)


def _layer_norm(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    x, gamma = args[0], args[1]
    beta = args[2] if len(args) > 2 else None
    return [F.layer_norm(x, gamma.shape, gamma, beta, params["epsilon"])]


def _rms_norm(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    x, gamma = args
    return [x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + params["epsilon"]) * gamma]


def _embedding(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    table, ids = args
    ids = torch.where(ids < 0, ids + table.shape[0], ids)  # ONNX Gather allows negative ids
    return [F.embedding(ids, table)]


def _rope(args: Args, params: dict[str, Any]) -> list[torch.Tensor]:
    x, cos, sin = args
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return [x * cos + rotated * sin]


KERNEL_IMPLS: dict[str, KernelImpl] = {
    "matmul": _matmul,
    "lora": _lora,
    "bias_add": _bias_add,
    "attention": _attention,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "gelu_erf": lambda a, p: [F.gelu(a[0])],
    "gelu_tanh": lambda a, p: [F.gelu(a[0], approximate="tanh")],
    "silu": lambda a, p: [F.silu(a[0])],
    "embedding": _embedding,
    "rope": _rope,
}
