"""The head-split pass: attention spread over clusters by heads, and everything that follows
the split (schedule, kernel manifest, RISC-V kernels, runtime), checked against numpy and
against the same model compiled with the pass disabled (``head-split{max-groups=1}``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_riscv_kernels import (
    _HARNESS,
    CC,
    HAVE_QEMU,
    NUMPY_DTYPES,
    _run_interpreter,
    _run_qemu,
)

from aimcc.backends import riscv as rv
from aimcc.backends.manifest import kernel_manifest
from aimcc.compiler import compile_model
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.ir.cluster import CallOp
from aimcc.passes.head_split import HeadSplitPass
from aimcc.passes.schedule import head_clusters
from aimcc.runtime.kernels import KERNEL_IMPLS

BERT_LORA = Path(__file__).resolve().parents[1] / "examples" / "models" / "bert_lora.onnx"


def _numpy_attention(q, kt, v, mask, scale):
    scores = scale * (q.astype(np.float64) @ kt.astype(np.float64))
    if mask is not None:
        scores = scores + mask
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v.astype(np.float64)


@pytest.mark.parametrize("groups", [2, 3, 6])
@pytest.mark.parametrize("mask_heads", [0, 1, 6])
def test_runtime_head_groups_match_numpy(groups: int, mask_heads: int) -> None:
    """The runtime's attention run as head groups and concatenated equals numpy's whole
    attention, with no mask, a mask broadcast over heads, and a per-head mask."""
    rng = np.random.default_rng(groups * 10 + mask_heads)
    shapes = [(2, 6, 5, 8), (2, 6, 8, 7), (2, 6, 7, 8)]
    q, kt, v = (rng.normal(size=s).astype(np.float32) for s in shapes)
    mask = None if not mask_heads else rng.normal(size=(2, mask_heads, 5, 7)).astype(np.float32)
    params = {"scale": 0.3, "head_clusters": list(range(groups))}
    args = [torch.from_numpy(a) for a in (q, kt, v)]
    args += [torch.from_numpy(mask)] if mask is not None else []
    (got,) = KERNEL_IMPLS["attention"](args, params)
    np.testing.assert_allclose(got.numpy(), _numpy_attention(q, kt, v, mask, 0.3), atol=2e-6)


@pytest.fixture(scope="module")
def bert_lora() -> tuple:
    """bert_lora compiled with the head split (default) and without (max-groups=1)."""
    split = compile_model(BERT_LORA)
    whole = compile_model(BERT_LORA, head_split=HeadSplitPass(max_groups=1))
    return split, whole


def _attentions(comp) -> list[CallOp]:
    return [o for o in comp.module.walk() if isinstance(o, CallOp) and o.callee.data == "attention"]


def test_split_uses_the_qkv_clusters_and_cuts_latency(bert_lora) -> None:
    split, whole = bert_lora
    arch = split.arch
    tile_clusters = [
        arch.cluster_of_tile(o.tile_id.value.data)
        for o in split.module.walk()
        if isinstance(o, ProgramOp)
    ]
    layers = [o for o in split.module.walk() if isinstance(o, AccumulateOp)]
    assert len(layers) == len(tile_clusters) == 12  # one tile per layer
    for block, op in enumerate(_attentions(split)):
        groups = head_clusters(op)
        assert len(groups) == 4  # 4 heads of 32: one per cluster
        qkv = tile_clusters[6 * block : 6 * block + 3]
        assert groups[0] == op.cluster.value.data == qkv[2]  # the V projection's cluster
        assert set(qkv) < set(groups)
        assert groups[3] not in tile_clusters  # a free cluster
    for op in _attentions(whole):
        assert head_clusters(op) == [op.cluster.value.data]
    s, w = split.schedule, whole.schedule
    assert s is not None and w is not None
    # one qk/softmax/av per group, each on its own cluster
    qk_units = {x.unit for x in s.slots if x.kind == "qk"}
    assert qk_units == {f"cluster:{c}" for op in _attentions(split) for c in head_clusters(op)}
    assert w.makespan_ns / s.makespan_ns >= 2.0
    assert s.gap < 0.05 and w.gap < 0.05


def test_manifest_lists_one_groups_calls(bert_lora) -> None:
    split, whole = bert_lora
    entries = [k for k in kernel_manifest(split)["kernels"] if k["kind"] == "attention"]
    plain = [k for k in kernel_manifest(whole)["kernels"] if k["kind"] == "attention"]
    for entry, op, before in zip(entries, _attentions(split), plain, strict=True):
        assert entry["head_split"] == {
            "groups": 4,
            "heads_per_group": 1,
            "clusters": head_clusters(op),
        }
        assert "head_split" not in before
        assert [c["repeat"] for c in entry["riscv"]["calls"]] == [1, 1, 1, 1]
        assert [c["repeat"] for c in before["riscv"]["calls"]] == [4, 4, 4, 4]
        assert [c["symbol"] for c in entry["riscv"]["calls"]] == [
            c["symbol"] for c in before["riscv"]["calls"]
        ]


def test_riscv_kernels_of_the_groups_match_numpy(bert_lora, tmp_path: Path) -> None:
    """Each group's planned RISC-V calls (qk, mask add, softmax, .V), run under qemu (else
    xDSL's interpreter) on that group's heads, concatenated: numpy's attention."""
    split, _ = bert_lora
    op = _attentions(split)[0]
    tcdm = split.arch.cluster.tcdm_kib * 1024
    calls = [k.piece(tcdm) for k in op.part_kernels]  # (piece, pieces, fits)
    assert [c[0].kind.data for c in calls] == ["qk", "add", "softmax", "av"]
    sigs = [c[0].signature for c in calls]  # pieces of queries that fit the TCDM
    if HAVE_QEMU:
        kernels = [rv.generate_kernel(sig) for sig in sigs]
        sources = []
        for kernel in kernels:
            path = tmp_path / f"{kernel.signature.symbol}.S"
            path.write_text(kernel.asm)
            sources.append(str(path))
        decls = "\n".join(f"void {s.symbol}(void *, void *, void *, void *);" for s in sigs)
        table = ",\n".join(f'  {{"{s.symbol}", {s.symbol}, 0}}' for s in sigs)
        words = max(k.footprint_bytes + 8 * len(k.args) for k in kernels) // 8 + 1
        (tmp_path / "harness.c").write_text(
            _HARNESS.format(decls=decls, table=table, max_words=words)
        )
        binary = tmp_path / "run"
        cmd = [CC, "-static", "-O1", "-march=rv64gc", "-mabi=lp64d", str(tmp_path / "harness.c")]
        subprocess.run([*cmd, *sources, "-o", str(binary)], check=True, capture_output=True)

        def run_piece(sig, args):
            return _run_qemu(binary, sig, args)[-1]
    else:

        def run_piece(sig, args):
            return _run_interpreter(sig, args)[-1]

    def run(i, *args):
        """Call ``i`` over all queries, piece by piece (rows of the per-query operands)."""
        sig, pieces = sigs[i], calls[i][1]
        rows = args[0].shape[0] // pieces
        per_query = [a.shape[0] == args[0].shape[0] and a.ndim == 2 for a in args]
        per_query[0] = True
        if sig.kind in ("qk", "av"):
            per_query[1] = False  # keys, values: whole
        out = []
        for r in range(pieces):
            part = [
                a[r * rows : (r + 1) * rows] if pq else a
                for a, pq in zip(args, per_query, strict=True)
            ]
            shape = rv.kernel_args(sig)[-1][2]
            out.append(run_piece(sig, [*part, np.empty(shape, ftype)]))
        return np.concatenate(out)

    # the cluster's number format (the preset's fp16): inputs rounded to it, as the kernels
    # hold them; the reference starts from the same values
    assert {s.dtype for s in sigs} == {"f16"}
    ftype = NUMPY_DTYPES["f16"]
    rng = np.random.default_rng(0)
    heads, s, d = 4, 128, 32
    q = rng.normal(size=(heads, s, d)).astype(ftype)
    kt = rng.normal(size=(heads, d, s)).astype(ftype)
    v = rng.normal(size=(heads, s, d)).astype(ftype)
    mask = np.where(rng.random((s, s)) < 0.2, -1e4, 0.0).astype(ftype)
    scale = float(op.params.data["scale"].value.data)
    groups = head_clusters(op)
    per = heads // len(groups)
    outs = []
    for j in range(len(groups)):
        for h in range(j * per, (j + 1) * per):
            probs = run(2, run(1, run(0, q[h], kt[h]), mask))
            outs.append(run(3, probs, v[h]))
    # Every kernel rounds its output to f16 (2**-11 relative). The scores (|s| <= 4.7 here)
    # then err by up to 4.7 * 2**-11 = 2.3e-3 absolute, which exp turns into that relative
    # error of the probabilities; the output, a mean of v (|v| <= ~4.5) weighted by them,
    # errs by up to ~4.5 * 2.3e-3 = 1e-2 (measured: 1.1e-3).
    np.testing.assert_allclose(
        np.stack(outs), _numpy_attention(q, kt, v, mask, scale), atol=1e-2, rtol=0
    )


def test_outputs_unchanged_by_the_split(bert_lora, tmp_path: Path) -> None:
    """The binaries with and without the split compute the same outputs (the runtime runs
    the groups and concatenates); tests/test_corpus.py compares them with onnxruntime."""
    from aimcc.backends.aimcb import write_binary
    from aimcc.runtime.executor import load

    split, whole = bert_lora
    feeds = {
        "input_ids": np.arange(128, dtype=np.int64)[None] % 1000,
        "attention_mask": (np.arange(128) < 100).astype(np.int64)[None],
        "token_type_ids": np.zeros((1, 128), np.int64),
    }
    results = []
    for name, comp in (("split", split), ("whole", whole)):
        write_binary(comp, tmp_path / f"{name}.aimcb")
        results.append(load(tmp_path / f"{name}.aimcb").run(feeds))
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-5)


def test_minilm_latency_halves(minilm_path: Path) -> None:
    split = compile_model(minilm_path)
    whole = compile_model(minilm_path, head_split=HeadSplitPass(max_groups=1))
    assert all(len(head_clusters(op)) == 12 for op in _attentions(split))
    assert whole.schedule.makespan_ns / split.schedule.makespan_ns >= 2.0
    assert split.schedule.gap < 0.05
