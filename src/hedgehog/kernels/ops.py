"""Autograd functions and entry points around the Triton linear-attention kernels.

States cross this boundary as plain tensors ``(kv, k_sum)``: kv (B, H, F, Dv) and
k_sum (B, H, F) in float32, the S and z of the attention library's LinearAttentionState.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import triton
from torch import Tensor

from hedgehog.kernels import chunked as K

DELTA_TOKENS = K.DELTA_BT.value
MAX_FEATURE_HALF = 128  # widest feature half (F / 2) the kernels keep in registers
MAX_HEAD_DIM = 128


class _Dims(NamedTuple):
    mode: int
    D: int  # head dim of q, k (0 in generic mode)
    DP: int  # width of the first feature half; F - DP is the second's
    F: int
    DV: int
    BD: int
    BDP: int
    BV: int
    NV: int
    BT: int  # tokens per chunk
    wide: bool  # head dim or feature half above 64: the wide launch options (and chunks of 32 when fused)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _block(n: int) -> int:
    """A block for n columns: a power of two, and at least 64 wide when compiled for the GPU (below)."""
    return _pow2(n) if K.INTERPRET else max(64, _pow2(n))


def _dims(mode: int, q: Tensor, v: Tensor, weight_q: Tensor | None) -> _Dims:
    if mode == 0:
        f = q.shape[-1]
        d, dp = 0, (f + 1) // 2
    else:
        d, dp = q.shape[-1], weight_q.shape[-1]
        f = 2 * dp
    dv = v.shape[-1]
    # head dim (none in generic mode), feature halves and value columns in blocks of at least 64 on the GPU:
    # with 32-wide feature blocks (F = 64) the compiled backward gave wrong gradients or illegal memory
    # accesses on the H200 (triton 3.6; experiments/efficiency/lab/NOTES.md), and at head dim 32 the forward
    # was 28% off with the feature blocks padded but not the head-dim one (experiments/lra/lab/kernel_eval_crash.py)
    bd, bdp = (_block(d) if d else _pow2(d)), _block(dp)
    wide = max(bd, bdp) > 64
    chunk = _LAUNCH.get("chunk", {})
    # chunks of 32 at the wide head dim of the fused kernels (they recompute the map in each kernel); the
    # generic kernels (features given) are faster with 64 there: 25.1 against 31.9 ms for `mapped` at
    # Llama-2's 2k (experiments/efficiency/lab/tuning/tune_mapped_llama2_h200.json)
    bt = chunk.get("BT", 32 if wide and mode != 0 else 64)
    bv = min(chunk.get("BV", 128 if wide else 64), _block(dv))
    return _Dims(mode, d, dp, f, dv, bd, bdp, bv, triton.cdiv(dv, bv), bt, wide)


# Launch options per kernel, the fastest measured on the H200 (experiments/efficiency/lab/tuning/,
# triton 3.6): narrow = GPT-2's head dim 64 with feature halves of 64, wide = Llama-2's 128.
TUNED = {
    "narrow": {
        "state": {"num_warps": 4, "num_stages": 2},
        "fwd": {"num_warps": 4, "num_stages": 1},
        "dq": {"num_warps": 4, "num_stages": 2},
        "dkv": {"num_warps": 4, "num_stages": 1},
        # the hybrid's window kernels: 4 warps, faster than 8 for the forward and the old single backward
        # kernel at both shapes (lab/hybrid_profile_h200.log); the split backward is not tuned yet
        "window_fwd": {"num_warps": 4, "num_stages": 1},
        "window_dq": {"num_warps": 4, "num_stages": 1},
        "window_dkv": {"num_warps": 4, "num_stages": 1},
    },
    "wide": {  # value blocks of 128
        "state": {"num_warps": 8, "num_stages": 1},
        "fwd": {"num_warps": 8, "num_stages": 1},
        "dq": {"num_warps": 8, "num_stages": 1},
        "dkv": {"num_warps": 8, "num_stages": 1},
        "window_fwd": {"num_warps": 4, "num_stages": 1},
        "window_dq": {"num_warps": 4, "num_stages": 1},
        "window_dkv": {"num_warps": 4, "num_stages": 1},
    },
}
# The Triton kernels by launch kind (TUNED's keys), for compiling them without a GPU to read their
# registers and spills (experiments/efficiency/lab/compile_report.py).
KERNELS = {"state": K._state_kernel, "fwd": K._fwd_kernel, "dq": K._dq_kernel, "dkv": K._dkv_kernel}
# Overrides of TUNED's options and of the blocks and splits the kernels pick, set only through
# `launch_overrides` (the keys it takes are LAUNCH_KEYS).
_LAUNCH: dict[str, dict[str, int]] = {}
LAUNCH_KEYS = {
    **{kind: ("num_warps", "num_stages") for kind in TUNED["narrow"]},
    "chunk": ("BT", "BV"),
    "split": ("walk", "group", "carry"),
}


@contextmanager
def launch_overrides(**overrides: dict[str, int]) -> Iterator[None]:
    """Launch parameters other than the tuned ones, inside the ``with`` block only (tuning, tests).

    Per kernel, ``state``, ``fwd``, ``dq``, ``dkv``, ``window_fwd``, ``window_dq``, ``window_dkv``:
    ``{"num_warps": W, "num_stages": S}`` over TUNED;
    ``chunk``: ``{"BT": tokens per chunk, "BV": value columns per program}``; ``split``: ``{"walk":
    state-walk programs resident per SM, "carry": the carry kernel's cost in percent of a walk (see
    _segments), "group": programs per SM of dq and dk/dv}``. E.g.
    ``with launch_overrides(dq={"num_warps": 8}, chunk={"BT": 32}): ...``. A nested block adds to
    the outer one's overrides; leaving a block restores what was set before it.
    """
    for kind, values in overrides.items():
        if kind not in LAUNCH_KEYS:
            raise ValueError(f"launch_overrides: unknown kind {kind!r}; expected one of {tuple(LAUNCH_KEYS)}")
        unknown = [k for k in values if k not in LAUNCH_KEYS[kind]]
        if unknown or not all(isinstance(v, int) and v >= 0 for v in values.values()):
            raise ValueError(
                f"launch_overrides: {kind}={values}: expected non-negative ints for keys among "
                f"{LAUNCH_KEYS[kind]}"
            )
    before = {kind: dict(values) for kind, values in _LAUNCH.items()}
    for kind, values in overrides.items():
        _LAUNCH[kind] = {**_LAUNCH.get(kind, {}), **values}
    try:
        yield
    finally:
        _LAUNCH.clear()
        _LAUNCH.update(before)


def _launch(kind: str, dims: _Dims) -> dict[str, int]:
    return {**TUNED["wide" if dims.wide else "narrow"][kind], **_LAUNCH.get(kind, {})}


# Narrowest head and value dims the compiled kernels are validated at (the GPU tests: 32, 64 and 128). At head
# dim 32 (LRA's 4 heads of 32) the compiled non-causal kernel was 28% off the PyTorch form on the H200 in bf16
# and crashed inside the LRA classifier at batch 250 while its blocks were 32 wide
# (experiments/lra/lab/kernel_eval_crash_h200.log); with the head-dim, feature and value blocks padded to 64
# (_dims) the output and all gradients match float64, causal and not (test_gpu_head_dim_32_through_padded_blocks,
# H200, 2026-12-03). Narrower heads run the PyTorch forms.
MIN_COMPILED_DIM = 32


def supported(head_dim: int | None, feature_dim: int, value_dim: int) -> bool:
    """Whether the kernels take these sizes (others fall back to PyTorch: wider features, and on the
    GPU head or value dims below MIN_COMPILED_DIM). ``head_dim`` None: features computed outside."""
    dims = [value_dim] if head_dim is None else [head_dim, value_dim]
    fits = max(dims) <= 256 and (head_dim or 0) <= MAX_HEAD_DIM and (feature_dim + 1) // 2 <= MAX_FEATURE_HALF
    return fits and (K.INTERPRET or min(dims) >= MIN_COMPILED_DIM)


def _sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device; 4 stand-ins on the CPU (the interpreter tests' splits)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _given_segment_len(segment_len: int, chunk: int) -> int:
    if segment_len % chunk:
        raise ValueError(f"segment_len must be a multiple of {chunk}, got {segment_len}")
    return segment_len


def _split_len(
    t: int, programs: int, device: torch.device, segment_len: int | None, chunk: int, per_sm: int
) -> int:
    """Tokens per program along the sequence: enough programs that about ``per_sm`` run per multiprocessor.

    Used for the chunk groups of dq, dk/dv (8 per SM); ``segment_len`` (a multiple of the chunk)
    overrides them and the state walk's segments.
    """
    if segment_len is not None:
        return _given_segment_len(segment_len, chunk)
    n_chunks = triton.cdiv(t, chunk)
    want = max(1, triton.cdiv(per_sm * _sm_count(device), programs))
    return triton.cdiv(n_chunks, min(want, n_chunks)) * chunk


PROJ_DTYPE = torch.float32 if K.INTERPRET else torch.float16  # the kernels' PROJ operand type


def _unit(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _pad_state(kv: Tensor, k_sum: Tensor, dims: _Dims) -> tuple[Tensor, Tensor]:
    """(B, H, F, Dv), (B, H, F) -> (BH, 2, BDP, Dv), (BH, 2, BDP) fp32 with the halves padded.

    When the halves fill their blocks (F = 2 BDP, e.g. Hedgehog at head dim 64) these are views
    of the (contiguous, fp32) state, not copies: a decode step then allocates only its new state.
    """
    b, h = kv.shape[:2]
    if dims.F == 2 * dims.BDP:
        s = kv.float().contiguous().view(b * h, 2, dims.BDP, dims.DV)
        return s, k_sum.float().contiguous().view(b * h, 2, dims.BDP)
    s = kv.new_zeros(b * h, 2, dims.BDP, dims.DV, dtype=torch.float32)
    z = kv.new_zeros(b * h, 2, dims.BDP, dtype=torch.float32)
    s[:, 0, : dims.DP] = kv[:, :, : dims.DP].reshape(b * h, dims.DP, dims.DV)
    s[:, 1, : dims.F - dims.DP] = kv[:, :, dims.DP :].reshape(b * h, dims.F - dims.DP, dims.DV)
    z[:, 0, : dims.DP] = k_sum[..., : dims.DP].reshape(b * h, dims.DP)
    z[:, 1, : dims.F - dims.DP] = k_sum[..., dims.DP :].reshape(b * h, dims.F - dims.DP)
    return s, z


def _unpad_state(s: Tensor, z: Tensor, b: int, h: int, dims: _Dims) -> tuple[Tensor, Tensor]:
    """The inverse of ``_pad_state``: (BH, 2, BDP, Dv), (BH, 2, BDP) -> (B, H, F, Dv), (B, H, F)."""
    if dims.F == 2 * dims.BDP:
        return s.view(b, h, dims.F, dims.DV), z.view(b, h, dims.F)
    kv = torch.cat([s[:, 0, : dims.DP], s[:, 1, : dims.F - dims.DP]], dim=1).view(b, h, dims.F, dims.DV)
    k_sum = torch.cat([z[:, 0, : dims.DP], z[:, 1, : dims.F - dims.DP]], dim=1).view(b, h, dims.F)
    return kv, k_sum


class _Config(NamedTuple):
    mode: int
    causal: bool
    eps: float
    inv_temp: float
    segment_len: int | None


def _strides(x: Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


STATE_DTYPE = torch.float32 if K.INTERPRET else torch.bfloat16  # stored chunk states (the DOT type)


def _walk(x, y, w, b, kmask, has_mask, rden, delta, hs, hz, dims, cfg, t, h, nseg, seg_len, bwd):
    """One launch of _state_kernel over (value blocks x halves, segments, batch x heads).

    Returns each segment's total (BH, nseg, 2, BDP, Dv), (BH, nseg, 2, BDP) fp32; with hs, hz
    given, also stores there the segment-local state before each chunk.
    """
    bh = x.shape[0] * h
    s1 = torch.empty(bh, nseg, 2, dims.BDP, dims.DV, device=x.device, dtype=torch.float32)
    z1 = torch.empty(bh, nseg, 2, dims.BDP, device=x.device, dtype=torch.float32)
    write = hs is not None
    K._state_kernel[(2 * dims.NV, nseg, bh)](
        x, y, w, b, kmask, rden, delta, hs if write else s1, hz if write else z1, s1, z1,
        *_strides(x), *_strides(y), t,
        t, h, nseg, hs.shape[1] if write else 1, seg_len, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV,
        MODE=dims.mode, BWD=bwd, REVERSE=bwd, HAS_MASK=has_mask, WRITE_CHUNKS=write,
        BD=dims.BD, BDP=dims.BDP, BV=dims.BV, BT=dims.BT, **_launch("state", dims),
    )  # fmt: skip
    return s1, z1


def _exclusive(s: Tensor, reverse: bool) -> Tensor:
    """Sum over the segments before (or after, reverse) each segment, along dim 1."""
    if reverse:
        s = s.flip(1)
    out = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1].cumsum(1)], dim=1)
    return out.flip(1) if reverse else out


# Walk programs resident per multiprocessor at TUNED's options (255 registers per thread on sm_90:
# two CTAs of 4 warps, one of 8), and what `_carry_kernel` costs, in percent of a perfectly balanced
# walk (it reads and writes every stored state once; on the H200 0.23 ms against GPT-2's 0.6-0.8 ms
# walk, 2.8 ms against Llama-2's 5.2 ms).
WALK_RESIDENT = {"narrow": 2, "wide": 1}
CARRY_PERCENT = 50


def _segments(
    t: int, bh: int, dims: _Dims, cfg: _Config, device: torch.device, carried: bool = True
) -> tuple[int, int]:
    """Tokens per segment of the state walk (its programs: value blocks x halves x segments x BH), and how many.

    The count with the least predicted time: the waves of walk programs times the chunks each
    walks, plus the carry kernel when there are several segments (``carried``: causal walks,
    whose stored states it rewrites). GPT-2 shape at 32k: 96 programs on 264 slots walk 512
    chunks each; 11 segments are four whole waves of 47 chunks. Llama-2 shape at 32k: 128
    programs already fill the 132 slots, so no split (it would only add the carry).
    """
    if cfg.segment_len is not None:
        seg_len = _given_segment_len(cfg.segment_len, dims.BT)
        return seg_len, triton.cdiv(t, seg_len)
    split = _LAUNCH.get("split", {})
    programs = 2 * bh * dims.NV
    slots = split.get("walk", WALK_RESIDENT["wide" if dims.wide else "narrow"]) * _sm_count(device)
    n_chunks = triton.cdiv(t, dims.BT)
    carry = split.get("carry", CARRY_PERCENT) / 100 * programs * n_chunks / slots if carried else 0.0

    def cost(n: int) -> float:
        return triton.cdiv(programs * n, slots) * triton.cdiv(n_chunks, n) + (carry if n > 1 else 0.0)

    most = min(n_chunks, 4 * triton.cdiv(slots, programs))
    best = min(range(1, most + 1), key=lambda n: (cost(n), n))
    seg_len = triton.cdiv(n_chunks, best) * dims.BT
    return seg_len, triton.cdiv(t, seg_len)


def _chunk_states(x, y, w, b, kmask, has_mask, rden, delta, s0, z0, dims, cfg, t, h, bwd):
    """The state before each chunk in walk order (forward: S, z; bwd: R, r from the end).

    Returns hs (BH, chunks, 2, BDP, Dv) in the kernels' DOT type, hz (BH, chunks, 2, BDP) fp32
    and the state after the whole sequence (BH, 2, BDP, Dv), (BH, 2, BDP) fp32. One walk over
    segments stores the segment-local states; when there are several segments (long sequences
    at small batch) or an initial state s0, z0, `_carry_kernel` adds what each segment carries
    in (the exclusive prefix sum of the segments' totals, plus s0, z0).
    """
    bh = x.shape[0] * h
    seg_len, nseg = _segments(t, bh, dims, cfg, x.device)
    seg_chunks = seg_len // dims.BT
    nch = nseg * seg_chunks  # a short last segment leaves entries unwritten and unread
    hs = torch.empty(bh, nch, 2, dims.BDP, dims.DV, device=x.device, dtype=STATE_DTYPE)
    hz = torch.empty(bh, nch, 2, dims.BDP, device=x.device, dtype=torch.float32)
    tot_s, tot_z = _walk(
        x, y, w, b, kmask, has_mask, rden, delta, hs, hz, dims, cfg, t, h, nseg, seg_len, bwd
    )
    # one segment: its total is the end state (a view; the sum would copy 2F/D x k per call at 1k)
    end_s, end_z = (tot_s[:, 0], tot_z[:, 0]) if nseg == 1 else (tot_s.sum(1), tot_z.sum(1))
    if nseg > 1 or s0 is not None:
        pre_s, pre_z = _exclusive(tot_s, bwd), _exclusive(tot_z, bwd)
        if s0 is not None:
            pre_s, pre_z = pre_s + s0[:, None], pre_z + z0[:, None]
            end_s, end_z = end_s + s0, end_z + z0
        K._carry_kernel[(triton.cdiv(t, dims.BT), 2 * dims.NV, bh)](  # written chunks only
            hs, hz, pre_s, pre_z, nch, nseg, seg_chunks, dims.DV, BDP=dims.BDP, BV=dims.BV, num_warps=4
        )
    return hs, hz, end_s, end_z


def _total_state(x, y, w, b, kmask, has_mask, rden, delta, dims, cfg, t, h, bwd):
    """Non-causal: the state summed over the whole sequence, as one stored 'chunk' state per (batch, head)."""
    bh = x.shape[0] * h
    seg_len, nseg = _segments(t, bh, dims, cfg, x.device, carried=False)
    s, z = _walk(x, y, w, b, kmask, has_mask, rden, delta, None, None, dims, cfg, t, h, nseg, seg_len, bwd)
    s, z = s.sum(1, keepdim=True), z.sum(1, keepdim=True)
    return s.to(STATE_DTYPE), z, s[:, 0], z[:, 0]


class _LinearAttentionFn(torch.autograd.Function):
    """Causal or non-causal linear attention; Hedgehog features fused or generic features given.

    Forward: the chunk states (one serial walk per segment), then every chunk's output in
    parallel. Backward: the forward's chunk states again (recomputed, not stored: memory),
    the reverse states R, and dq, dk/dv per chunk in parallel.
    """

    @staticmethod
    def forward(ctx, q, k, v, wq, bq, wk, bk, kmask, s0, z0, cfg: _Config):
        dims = _dims(cfg.mode, q, v, wq)
        b, h, t = q.shape[:3]
        bh = b * h
        dummy = q
        wq, bq, wk, bk = (dummy if x is None else x for x in (wq, bq, wk, bk))
        if cfg.mode != 0:
            wq, wk = wq.to(PROJ_DTYPE), wk.to(PROJ_DTYPE)
        kmask_arg = dummy if kmask is None else kmask
        has_mask = kmask is not None
        fwd_args = (k, v, wk, bk, kmask_arg, has_mask, dummy, dummy)
        if cfg.causal:
            hs, hz, s1, z1 = _chunk_states(*fwd_args, s0, z0, dims, cfg, t, h, False)
        else:
            hs, hz, s1, z1 = _total_state(*fwd_args, dims, cfg, t, h, False)
        o = torch.empty_like(v)
        store_res = v.dtype in (torch.float16, torch.bfloat16) and any(ctx.needs_input_grad[:7])
        res = torch.empty_like(v) if store_res else o
        rden = torch.empty(bh, t, device=q.device, dtype=torch.float32)
        K._fwd_kernel[(dims.NV, triton.cdiv(t, dims.BT), bh)](
            q, k, v, o, res, wq, bq, wk, bk, kmask_arg, hs, hz, rden,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), t,
            t, h, hs.shape[1], cfg.inv_temp, cfg.eps, dims.D, dims.DP, dims.F, dims.DV,
            MODE=dims.mode, CAUSAL=cfg.causal, HAS_MASK=has_mask, STORE_RES=store_res,
            BD=dims.BD, BDP=dims.BDP, BV=dims.BV, BT=dims.BT, **_launch("fwd", dims),
        )  # fmt: skip
        # causal: the chunk states are recomputed in the backward (they are 2F/D times the size of k)
        saved_state = (s0, z0) if cfg.causal else (hs, hz)
        saved_state = tuple(dummy if x is None else x for x in saved_state)
        ctx.save_for_backward(q, k, v, o, res, wq, bq, wk, bk, kmask_arg, rden, *saved_state)
        ctx.cfg, ctx.dims = cfg, dims
        ctx.flags = (has_mask, store_res, s0 is not None)
        ctx.mark_non_differentiable(s1, z1)
        return o, s1, z1

    @staticmethod
    def backward(ctx, grad_o, _grad_s, _grad_z):
        q, k, v, o, res, wq, bq, wk, bk, kmask, rden, saved_s, saved_z = ctx.saved_tensors
        has_mask, has_res, has_s0 = ctx.flags
        g = _unit(grad_o)
        delta = _delta(o, res, g, rden, has_res)
        saved = (saved_s, saved_z) if has_s0 or not ctx.cfg.causal else (None, None)
        grads = _linear_backward(
            g, delta, q, k, v, wq, bq, wk, bk, kmask, has_mask, rden, *saved, ctx.dims, ctx.cfg
        )
        return (*grads, None, None, None, None)


def _delta(o: Tensor, res: Tensor, g: Tensor, rden: Tensor, has_res: bool) -> Tensor:
    """delta = -(g . o) / den' per token (B H, T) fp32, o read with its stored rounding residual."""
    b, h, t, dv = o.shape
    delta = torch.empty(b * h, t, device=o.device, dtype=torch.float32)
    K._delta_kernel[(triton.cdiv(t, DELTA_TOKENS), b * h)](
        o, res, g, rden, delta, *_strides(o), *_strides(g), t, h, dv, HAS_RES=has_res, BDV=_pow2(dv),
    )  # fmt: skip
    return delta


def _linear_backward(
    g, delta, q, k, v, wq, bq, wk, bk, kmask, has_mask, rden, saved_s, saved_z, dims, cfg, out=None
):
    """dq, dk, dv (and dWq, dbq, dWk, dbk in the Hedgehog modes, else None) of linear attention from the
    upstream g, delta and 1/den' (rden). Causal: the forward's chunk states are recomputed (from saved_s,
    saved_z as the initial state when given); non-causal: saved_s, saved_z are the stored total. ``out``:
    (dq, dk) tensors (views allowed) to write those two into, in q's and k's dtype."""
    b, h, t = q.shape[:3]
    bh = b * h
    fwd_args = (k, v, wk, bk, kmask, has_mask, q, q)
    bwd_args = (q, g, wq, bq, q, False, rden, delta)
    if cfg.causal:
        hs, hz, _, _ = _chunk_states(*fwd_args, saved_s, saved_z, dims, cfg, t, h, False)
    else:
        hs, hz = saved_s, saved_z
    atomic = dims.NV > 1
    if atomic:
        dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
        dk = torch.zeros(k.shape, device=k.device, dtype=torch.float32)
    else:
        dq, dk = out or (torch.empty_like(q), torch.empty_like(k))
    dv = torch.empty_like(v)
    hedgehog = dims.mode != 0
    dwq = torch.zeros(h, dims.D, dims.DP, device=q.device, dtype=torch.float32) if hedgehog else q
    dbq = torch.zeros(h, dims.DP, device=q.device, dtype=torch.float32) if hedgehog else q
    dwk = torch.zeros_like(dwq) if hedgehog else q
    dbk = torch.zeros_like(dbq) if hedgehog else q
    common = dict(
        MODE=dims.mode, CAUSAL=cfg.causal, HAS_MASK=has_mask, ATOMIC=atomic,
        BD=dims.BD, BDP=dims.BDP, BV=dims.BV, BT=dims.BT,
    )  # fmt: skip
    per_sm = _LAUNCH.get("split", {}).get("group", 8)
    group_len = _split_len(t, bh * dims.NV, q.device, cfg.segment_len, dims.BT, per_sm)
    grid = (dims.NV, triton.cdiv(t, group_len), bh)
    K._dq_kernel[grid](
        q, k, v, g, dq, wq, bq, wk, bk, kmask, hs, hz, rden, delta, dwq, dbq,
        *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dq), t,
        t, h, hs.shape[1], group_len, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV, **common,
        **_launch("dq", dims),
    )  # fmt: skip
    del hs, hz  # the forward's states and the reverse ones are never held at once (peak memory)
    if cfg.causal:
        hr, hrz, _, _ = _chunk_states(*bwd_args, None, None, dims, cfg, t, h, True)
    else:
        hr, hrz, _, _ = _total_state(*bwd_args, dims, cfg, t, h, True)
    K._dkv_kernel[grid](
        q, k, v, g, dk, dv, wq, bq, wk, bk, kmask, hr, hrz, rden, delta, dwk, dbk,
        *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dk), *_strides(dv), t,
        t, h, hr.shape[1], group_len, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV, **common,
        **_launch("dkv", dims),
    )  # fmt: skip
    if atomic and out is not None:
        dq, dk = out[0].copy_(dq), out[1].copy_(dk)
    elif atomic:
        dq, dk = dq.to(q.dtype), dk.to(k.dtype)
    if not hedgehog:
        return dq, dk, dv, None, None, None, None
    return dq, dk, dv, dwq, dbq, dwk, dbk


def _check(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be (batch, heads, tokens, dim), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[:3] != k.shape[:3] or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            "the kernels need q, k, v of one length (self-attention); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def _run(q, k, v, wq, bq, wk, bk, mode, causal, eps, temperature, state, key_padding_mask, segment_len):
    _check(q, k, v)
    q, k, v = _unit(q), _unit(k), _unit(v)
    dims = _dims(mode, q, v, wq)
    if not supported(dims.D if dims.mode else None, dims.F, dims.DV):
        raise ValueError(
            f"head dim {dims.D if dims.mode else '(features given)'}, feature dim {dims.F}, value dim {dims.DV}: the kernels take head dims "
            f"<= {MAX_HEAD_DIM}, F <= {2 * MAX_FEATURE_HALF} and, compiled, head and value dims >= "
            f"{MIN_COMPILED_DIM} (narrower ones are not validated on the GPU); use the PyTorch forms in "
            "hedgehog.attention (LinearAttention falls back to them by itself)"
        )
    if state is not None and not causal:
        raise ValueError("a carried state only makes sense for causal attention")
    s0 = z0 = None
    if state is not None:
        s0, z0 = _pad_state(state[0], state[1], dims)
    kmask = None
    if key_padding_mask is not None:
        kmask = key_padding_mask.to(device=q.device, dtype=torch.float32).contiguous()
    cfg = _Config(mode, causal, float(eps), 1.0 / float(temperature), segment_len)
    o, s1, z1 = _LinearAttentionFn.apply(q, k, v, wq, bq, wk, bk, kmask, s0, z0, cfg)
    if not causal:
        return o, None
    return o, _unpad_state(s1, z1, q.shape[0], q.shape[1], dims)


def hedgehog_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    weight_q: Tensor,
    bias_q: Tensor,
    weight_k: Tensor,
    bias_k: Tensor,
    activation: str = "softmax",
    temperature: float = 1.0,
    causal: bool = True,
    eps: float = 1e-6,
    state: tuple[Tensor, Tensor] | None = None,
    key_padding_mask: Tensor | None = None,
    segment_len: int | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Hedgehog attention with the feature map fused: q, k, v (B, H, T, D), W (H, D, D'), b (H, D').

    Returns the output (dtype of v) and, when causal, the final state (kv, k_sum) in float32.
    Gradients flow to q, k, v, the weights and the biases; a carried ``state`` is a constant.
    ``key_padding_mask`` (B, T): keys where it is 0 are left out. ``segment_len`` (a multiple
    of the chunk: 64, or 32 at head dim 128) overrides the automatic split of the sequence.
    """
    if activation not in ("softmax", "exp"):
        raise ValueError(f"Hedgehog activation must be 'softmax' or 'exp', got {activation!r}")
    params = [x.float().contiguous() for x in (weight_q, bias_q, weight_k, bias_k)]
    return _run(
        q, k, v, *params, K.MODES[activation], causal, eps, temperature, state, key_padding_mask, segment_len
    )


def linear_attention(
    fq: Tensor,
    fk: Tensor,
    v: Tensor,
    causal: bool = True,
    eps: float = 1e-6,
    state: tuple[Tensor, Tensor] | None = None,
    segment_len: int | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Linear attention on features computed outside (the paper's baselines): (B, H, T, F) each.

    Same outputs and state as ``hedgehog_attention``; gradients flow to fq, fk, v.
    """
    return _run(fq, fk, v, None, None, None, None, 0, causal, eps, 1.0, state, None, segment_len)


def _decode(q, k, v, wq, bq, wk, bk, mode, eps, temperature, state):
    _check(q, k, v)
    if q.shape[2] != 1:
        raise ValueError(f"decoding takes one token per call, got {q.shape[2]}")
    dims = _dims(mode, q, v, wq)
    b, h = q.shape[:2]
    s0, z0 = _pad_state(state[0], state[1], dims)
    s1, z1 = torch.empty_like(s0), torch.empty_like(z0)
    o = torch.empty(b, h, 1, dims.DV, device=v.device, dtype=v.dtype)
    dummy = q
    wq, bq, wk, bk = (dummy if x is None else x.float().contiguous() for x in (wq, bq, wk, bk))
    K._decode_kernel[(dims.NV, b * h)](
        q, k, v, o, wq, bq, wk, bk, s0, z0, s1, z1,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1),
        h, 1.0 / float(temperature), float(eps), dims.D, dims.DP, dims.F, dims.DV,
        MODE=mode, BD=dims.BD, BDP=dims.BDP, BV=dims.BV, num_warps=4,
    )  # fmt: skip
    return o, _unpad_state(s1, z1, b, h, dims)


@torch.no_grad()
def hedgehog_decode(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    weight_q: Tensor,
    bias_q: Tensor,
    weight_k: Tensor,
    bias_k: Tensor,
    state: tuple[Tensor, Tensor],
    activation: str = "softmax",
    temperature: float = 1.0,
    eps: float = 1e-6,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One generated token (B, H, 1, D) against the carried state; returns output and new state."""
    return _decode(q, k, v, weight_q, bias_q, weight_k, bias_k, K.MODES[activation], eps, temperature, state)


@torch.no_grad()
def linear_attention_decode(
    fq: Tensor, fk: Tensor, v: Tensor, state: tuple[Tensor, Tensor], eps: float = 1e-6
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One token of features (B, H, 1, F) against the carried state (generic feature maps)."""
    return _decode(fq, fk, v, None, None, None, None, 0, eps, 1.0, state)


def _map_launch(d: int, dp: int) -> tuple[int, int, int]:
    """Head-dim block, feature-half block and warps of the map kernels (tiles of 64 tokens): 4 warps at
    head dim 64 (no spills on sm_90), 8 at 128 (208 B per thread in the backward;
    experiments/efficiency/lab/compile_report.py)."""
    bd, bdp = _block(d), _block(dp)
    return bd, bdp, 8 if max(bd, bdp) > 64 else 4


MAP_TOKENS = 64  # tokens per program of the map kernels


class _HedgehogMapFn(torch.autograd.Function):
    """Hedgehog's feature map as two kernels: features written once (forward), and from their
    gradient dx, dW, db with the features recomputed (backward)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mode: int, inv_temp: float):
        b, h, t, d = x.shape
        dp = weight.shape[-1]
        bd, bdp, warps = _map_launch(d, dp)
        w = weight.to(PROJ_DTYPE).contiguous()
        f = torch.empty(b, h, t, 2 * dp, device=x.device, dtype=x.dtype)
        K._map_fwd_kernel[(triton.cdiv(t, MAP_TOKENS), b * h)](
            x, f, w, bias, *_strides(x), *_strides(f), t, h, inv_temp, d, dp, 2 * dp,
            MODE=mode, BD=bd, BDP=bdp, BT=MAP_TOKENS, num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(x, w, bias)
        ctx.mode, ctx.inv_temp = mode, inv_temp
        return f

    @staticmethod
    def backward(ctx, grad_f):
        x, w, bias = ctx.saved_tensors
        b, h, t, d = x.shape
        dp = w.shape[-1]
        bd, bdp, warps = _map_launch(d, dp)
        g = _unit(grad_f)
        dx = torch.empty_like(x)
        dz = torch.empty(b, h, t, dp, device=x.device, dtype=STATE_DTYPE)
        K._map_bwd_kernel[(triton.cdiv(t, MAP_TOKENS), b * h)](
            x, g, dx, dz, w, bias, *_strides(x), *_strides(g), *_strides(dx), *_strides(dz),
            t, h, ctx.inv_temp, d, dp, 2 * dp, MODE=ctx.mode, BD=bd, BDP=bdp, BT=MAP_TOKENS, num_warps=warps,
        )  # fmt: skip
        # dW[h] = sum_b x[b, h]^T dz[b, h]: one batched GEMM per (batch, head) on x as it lies (no transposed
        # copy of x), then the sum over the batch in fp32
        xt = x.reshape(b * h, t, d).transpose(1, 2)
        dw = torch.bmm(xt, dz.view(b * h, t, dp).to(x.dtype)).view(b, h, d, dp).sum(0, dtype=torch.float32)
        db = dz.sum(dim=(0, 2), dtype=torch.float32)
        return dx, dw, db, None, None


def hedgehog_features(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "softmax", temperature: float = 1.0
) -> Tensor:
    """Hedgehog's feature map on x (B, H, T, D) with W (H, D, D'), b (H, D'): the features
    (B, H, T, 2 D') in x's dtype, as ``HedgehogFeatureMap`` computes them for q or for k.

    For the generic kernels (``linear_attention``) on features written once, the other design to
    ``hedgehog_attention``'s recomputation inside each kernel. Gradients flow to x, W and b.
    """
    if activation not in ("softmax", "exp"):
        raise ValueError(f"Hedgehog activation must be 'softmax' or 'exp', got {activation!r}")
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[:2] != (x.shape[1], x.shape[3]):
        raise ValueError(
            f"x must be (batch, heads, tokens, dim) and the weight (heads, dim, features/2); got "
            f"{tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if not supported(x.shape[-1], 2 * weight.shape[-1], x.shape[-1]):
        raise ValueError(
            f"head dim {x.shape[-1]}, feature dim {2 * weight.shape[-1]}: the kernels take head dims "
            f"{MIN_COMPILED_DIM}-{MAX_HEAD_DIM} and F <= {2 * MAX_FEATURE_HALF} (compiled); use "
            "HedgehogFeatureMap in hedgehog.attention"
        )
    params = (weight.float(), bias.float().contiguous())
    return _HedgehogMapFn.apply(_unit(x), *params, K.MODES[activation], 1.0 / float(temperature))


WINDOW = 64  # the window the hybrid kernels take: one chunk of 64 tokens


class _WindowFn(torch.autograd.Function):
    """The sliding-window hybrid, causal, window = one chunk, features given.

    Forward: the linear state before each chunk (the state walk), then `_window_fwd_kernel`. Backward: the
    linear part is causal linear attention between the queries from position 64 on and the keys and values
    up to T - 64 (key j counts for queries i >= j + 64), so the generic backward gives its gradients from
    the hybrid's own 1 / den' and delta (divided by gamma); `_window_dq_kernel` and `_window_dkv_kernel` add
    the window part's.
    """

    @staticmethod
    def forward(ctx, q, k, v, fq, fk, gamma, kmask, eps: float):
        dims = _dims(0, fq, v, None)._replace(BT=WINDOW)
        b, h, t = q.shape[:3]
        cfg = _Config(0, True, eps, 1.0, None)
        hs, hz, end_s, end_z = _chunk_states(
            fk, v, fk, fk, fk, False, fk, fk, None, None, dims, cfg, t, h, False
        )
        o = torch.empty_like(v)
        store_res = v.dtype in (torch.float16, torch.bfloat16) and any(ctx.needs_input_grad[:6])
        res = torch.empty_like(v) if store_res else o
        rden = torch.empty(b * h, t, device=q.device, dtype=torch.float32)
        has_mask = kmask is not None
        kmask = kmask if has_mask else rden  # a placeholder the kernels never read
        # 4 warps spill 800 B per thread on sm_90 at head dim 64 (216 B at 8; lab/compile_report.py) and still
        # ran faster than 8 on the H200 (lab/hybrid_profile_h200.log)
        K._window_fwd_kernel[(dims.NV, triton.cdiv(t, dims.BT), b * h)](
            q, k, fq, fk, v, o, res, rden, gamma, hs, hz, kmask,
            *_strides(q), *_strides(k), *_strides(fq), *_strides(fk), *_strides(v), *_strides(o),
            t, h, hs.shape[1], q.shape[-1] ** -0.5, eps, q.shape[-1], dims.DP, dims.F, dims.DV,
            BD=_block(q.shape[-1]), BDP=dims.BDP, BV=dims.BV, BT=dims.BT, STORE_RES=store_res,
            HAS_MASK=has_mask, **_launch("window_fwd", dims),
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, fq, fk, gamma, o, res, rden, kmask)
        ctx.store_res, ctx.eps, ctx.has_mask = store_res, eps, has_mask
        kv, k_sum = _unpad_state(end_s, end_z, b, h, dims)  # the linear state of all T keys, fp32
        ctx.mark_non_differentiable(kv, k_sum)
        return o, kv, k_sum

    @staticmethod
    def backward(ctx, grad_o, _grad_kv, _grad_k_sum):
        q, k, v, fq, fk, gamma, o, res, rden, kmask = ctx.saved_tensors
        b, h, t, d = q.shape
        g = _unit(grad_o)
        delta = _delta(o, res, g, rden, ctx.store_res)
        dims = _dims(0, fq, v, None)
        # the linear part: query i against the keys j <= i - 64, i.e. causal linear attention between the
        # queries from position 64 on and the keys and values up to T - 64 (views, no copies). phi(q) / gamma
        # enters through 1 / den' and delta scaled by 1 / gamma (the gradients are linear in that pair), so the
        # query gradient comes back as dfq itself
        s = t - WINDOW
        dfq, dfk = torch.empty_like(fq), torch.empty_like(fk)  # written in place: no padded copies
        dfq[:, :, : min(WINDOW, t)].zero_()  # queries with no key before their window
        dfk[:, :, max(s, 0) :].zero_()  # keys in every later query's window
        if s > 0:
            inv_gamma = (1.0 / gamma).repeat(b)[:, None]  # rows of rden and delta are (batch, head) pairs
            rden_l, delta_l = ((x[:, WINDOW:] * inv_gamma).contiguous() for x in (rden, delta))
            later, early = (
                (slice(None), slice(None), slice(WINDOW, None)),
                (slice(None), slice(None), slice(s)),
            )
            fq_l, fk_e, v_e = fq[later], fk[early], v[early]
            cfg = _Config(0, True, ctx.eps, 1.0, None)
            no_map = (fq_l,) * 5  # the generic mode: no map parameters, no key mask
            _, _, dv_e, *_ = _linear_backward(
                g[later], delta_l, fq_l, fk_e, v_e, *no_map, False, rden_l, None, None, dims, cfg,
                out=(dfq[later], dfk[early]),
            )  # fmt: skip
        # the window part: dq and the rows' sums of e P per query chunk, then dk and dv per key chunk (adding
        # the linear part's dv), no atomics and no fp32 copies
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        ep = torch.empty(b * h, t, device=q.device, dtype=torch.float32)
        bv = min(128, _block(v.shape[-1]))
        blocks = dict(BD=_block(d), BV=bv, NV=triton.cdiv(v.shape[-1], bv), BT=WINDOW)
        grid = (triton.cdiv(t, WINDOW), b * h)
        K._window_dq_kernel[grid](
            q, k, v, g, dq, rden, delta, ep, kmask,
            *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dq),
            t, h, d ** -0.5, d, v.shape[-1], **blocks, HAS_MASK=ctx.has_mask, **_launch("window_dq", dims),
        )  # fmt: skip
        dv_lin = dv_e if s > 0 else dv
        K._window_dkv_kernel[grid](
            q, k, v, g, dk, dv, dv_lin, rden, delta, ep, kmask,
            *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dk), *_strides(dv), *_strides(dv_lin),
            t, max(s, 0), h, d ** -0.5, d, v.shape[-1], **blocks, HAS_MASK=ctx.has_mask,
            **_launch("window_dkv", dims),
        )  # fmt: skip
        # scaling the window terms e and phi(q) / gamma together by c moves o = N / (D + eps) only through
        # eps: d o / d c = o eps / den', so sum_ij e_ij de_ij + sum du . u = -eps sum delta, and
        # dgamma = -sum du . u / gamma = (sum_ij e_ij de_ij + eps sum delta) / gamma: the rows' sums in fp32,
        # not a sum over the bf16-rounded du = gamma dfq (which cancels to a few percent). The first window's
        # rows have no linear keys (du = 0): they add exactly nothing
        dgamma = (ep + ctx.eps * delta).view(b, h, t)[:, :, WINDOW:].sum((0, 2)) / gamma
        return dq, dk, dv, dfq, dfk, dgamma, None, None


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    fq: Tensor,
    fk: Tensor,
    window_factor: Tensor,
    window: int = WINDOW,
    eps: float = 1e-6,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The sliding-window hybrid (``hedgehog.attention.window``), causal: exact softmax over the last
    ``window`` keys, linear attention on the features fq, fk (B, H, T, F) before them, one normaliser,
    ``window_factor`` gamma (H,) in (0, 1]. q, k (B, H, T, D), v (B, H, T, Dv). Gradients flow to q, k, v,
    fq, fk and gamma. The window is one chunk of the kernels: 64 tokens. ``key_padding_mask`` (B, T): keys
    where it is 0 are left out of both parts (as ``hedgehog.attention.window`` does).

    Returns the output (dtype of v) and the linear state of all T keys, (kv (B, H, F, Dv), k_sum (B, H, F))
    in float32, a constant: ``hedgehog.attention.window.window_state_after`` makes the hybrid's state of it.
    """
    _check(q, k, v)
    if fq.shape[:3] != q.shape[:3] or fk.shape != fq.shape:
        raise ValueError(
            f"fq, fk must be (batch, heads, tokens, features) matching q; got {tuple(fq.shape)}, {tuple(fk.shape)} "
            f"for q {tuple(q.shape)}"
        )
    if window != WINDOW:
        raise ValueError(f"the hybrid kernel takes a window of {WINDOW} tokens (one chunk), got {window}")
    if window_factor.shape != (q.shape[1],):
        raise ValueError(
            f"window_factor must be one factor per head, ({q.shape[1]},); got {tuple(window_factor.shape)}"
        )
    if not supported(None, fq.shape[-1], v.shape[-1]) or q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(
            f"head dim {q.shape[-1]}, feature dim {fq.shape[-1]}, value dim {v.shape[-1]}: the kernel takes head "
            f"dims <= {MAX_HEAD_DIM}, F <= {2 * MAX_FEATURE_HALF} and, compiled, value dims >= {MIN_COMPILED_DIM}; "
            "use hedgehog.attention.window"
        )
    kmask = None
    if key_padding_mask is not None:
        if key_padding_mask.shape != (q.shape[0], q.shape[2]):
            raise ValueError(
                f"key_padding_mask must be (batch, tokens) = {(q.shape[0], q.shape[2])}, got "
                f"{tuple(key_padding_mask.shape)}"
            )
        kmask = key_padding_mask.to(device=q.device, dtype=torch.float32).contiguous()
        fk = fk * kmask[:, None, :, None].to(fk.dtype)  # masked keys out of the linear part
    q, k, v, fq, fk = (_unit(x) for x in (q, k, v, fq, fk))
    o, kv, k_sum = _WindowFn.apply(q, k, v, fq, fk, window_factor.float().contiguous(), kmask, float(eps))
    return o, (kv, k_sum)
