"""Autograd functions and entry points around the Triton linear-attention kernels.

States cross this boundary as plain tensors ``(kv, k_sum)``: kv (B, H, F, Dv) and
k_sum (B, H, F) in float32, the S and z of the attention library's LinearAttentionState.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from torch import Tensor

from hedgehog.kernels import chunked as K

CHUNK = K.BT.value  # tokens per chunk
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
    warps: int
    stages: int


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _dims(mode: int, q: Tensor, v: Tensor, weight_q: Tensor | None) -> _Dims:
    if mode == 0:
        f = q.shape[-1]
        d, dp = 0, (f + 1) // 2
    else:
        d, dp = q.shape[-1], weight_q.shape[-1]
        f = 2 * dp
    dv = v.shape[-1]
    bd, bdp = _pow2(d), _pow2(dp)
    bv = min(64, _pow2(dv))
    warps = 8 if bd <= 64 and bdp <= 64 else 16
    return _Dims(mode, d, dp, f, dv, bd, bdp, bv, triton.cdiv(dv, bv), warps, 1)


def supported(head_dim: int, feature_dim: int, value_dim: int) -> bool:
    """Whether the kernels take these sizes (wider features fall back to PyTorch)."""
    return head_dim <= MAX_HEAD_DIM and value_dim <= 256 and (feature_dim + 1) // 2 <= MAX_FEATURE_HALF


def _segment_len(t: int, programs: int, device: torch.device, segment_len: int | None) -> int:
    """Tokens per segment: enough segments that about 4 programs run per multiprocessor."""
    if segment_len is not None:
        if segment_len % CHUNK:
            raise ValueError(f"segment_len must be a multiple of {CHUNK}, got {segment_len}")
        return segment_len
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    n_chunks = triton.cdiv(t, CHUNK)
    want = max(1, triton.cdiv(4 * sms, programs))
    return triton.cdiv(n_chunks, min(want, n_chunks)) * CHUNK


PROJ_DTYPE = torch.float32 if K.INTERPRET else torch.float16  # the kernels' PROJ operand type


def _unit(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _pad_state(kv: Tensor, k_sum: Tensor, dims: _Dims) -> tuple[Tensor, Tensor]:
    """(B, H, F, Dv), (B, H, F) -> (BH, 2, BDP, Dv), (BH, 2, BDP) with the halves padded."""
    b, h = kv.shape[:2]
    s = kv.new_zeros(b * h, 2, dims.BDP, dims.DV, dtype=torch.float32)
    z = kv.new_zeros(b * h, 2, dims.BDP, dtype=torch.float32)
    s[:, 0, : dims.DP] = kv[:, :, : dims.DP].reshape(b * h, dims.DP, dims.DV)
    s[:, 1, : dims.F - dims.DP] = kv[:, :, dims.DP :].reshape(b * h, dims.F - dims.DP, dims.DV)
    z[:, 0, : dims.DP] = k_sum[..., : dims.DP].reshape(b * h, dims.DP)
    z[:, 1, : dims.F - dims.DP] = k_sum[..., dims.DP :].reshape(b * h, dims.F - dims.DP)
    return s, z


def _unpad_state(s: Tensor, z: Tensor, b: int, h: int, dims: _Dims) -> tuple[Tensor, Tensor]:
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


def _segment_states(x, y, w, b, kmask, has_mask, rden, delta, dims, cfg, t, h, nseg, seg_len, bwd):
    """Per-segment states (BH, nseg, 2, BDP, Dv) and (BH, nseg, 2, BDP) by _state_kernel."""
    bh = x.shape[0] * h
    s = torch.empty(bh, nseg, 2, dims.BDP, dims.DV, device=x.device, dtype=torch.float32)
    z = torch.empty(bh, nseg, 2, dims.BDP, device=x.device, dtype=torch.float32)
    K._state_kernel[(dims.NV, nseg, bh)](
        x, y, w, b, kmask, rden, delta, s, z,
        *_strides(x), *_strides(y), t,
        t, h, nseg, seg_len, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV,
        MODE=dims.mode, BWD=bwd, HAS_MASK=has_mask,
        BD=dims.BD, BDP=dims.BDP, BV=dims.BV, num_warps=dims.warps, num_stages=dims.stages,
    )  # fmt: skip
    return s, z


def _exclusive(s: Tensor, reverse: bool) -> Tensor:
    """Sum over the segments before (or after, reverse) each segment, along dim 1."""
    if reverse:
        s = s.flip(1)
    out = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1].cumsum(1)], dim=1)
    return out.flip(1) if reverse else out


class _LinearAttentionFn(torch.autograd.Function):
    """Causal or non-causal linear attention; Hedgehog features fused or generic features given."""

    @staticmethod
    def forward(ctx, q, k, v, wq, bq, wk, bk, kmask, s0, z0, cfg: _Config):
        dims = _dims(cfg.mode, q, v, wq)
        b, h, t = q.shape[:3]
        bh = b * h
        seg_len = _segment_len(t, bh * dims.NV, q.device, cfg.segment_len)
        nseg = triton.cdiv(t, seg_len)
        dummy = q
        wq, bq, wk, bk = (dummy if x is None else x for x in (wq, bq, wk, bk))
        if cfg.mode != 0:
            wq, wk = wq.to(PROJ_DTYPE), wk.to(PROJ_DTYPE)
        kmask_arg = dummy if kmask is None else kmask
        o = torch.empty_like(v)
        store_res = v.dtype in (torch.float16, torch.bfloat16) and any(ctx.needs_input_grad[:7])
        res = torch.empty_like(v) if store_res else o
        rden = torch.empty(bh, t, device=q.device, dtype=torch.float32)
        s1 = torch.empty(bh, 2, dims.BDP, dims.DV, device=q.device, dtype=torch.float32)
        z1 = torch.empty(bh, 2, dims.BDP, device=q.device, dtype=torch.float32)
        if not cfg.causal or nseg > 1:
            s_seg, z_seg = _segment_states(
                k,
                v,
                wk,
                bk,
                kmask_arg,
                kmask is not None,
                dummy,
                dummy,
                dims,
                cfg,
                t,
                h,
                nseg,
                seg_len,
                False,
            )
        if cfg.causal:
            prefix, zprefix = s0, z0
            if nseg > 1:
                prefix, zprefix = _exclusive(s_seg, False), _exclusive(z_seg, False)
                if s0 is not None:
                    prefix, zprefix = prefix + s0[:, None], zprefix + z0[:, None]
            elif s0 is not None:
                prefix, zprefix = s0[:, None], z0[:, None]
            seg_stride = 1
        else:
            prefix, zprefix = s_seg.sum(1, keepdim=True), z_seg.sum(1, keepdim=True)
            seg_stride = 0
        has_init = prefix is not None
        K._fwd_kernel[(dims.NV, nseg, bh)](
            q, k, v, o, res, wq, bq, wk, bk, kmask_arg,
            prefix if has_init else dummy, zprefix if has_init else dummy, s1, z1, rden,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), t,
            t, h, nseg, seg_len, seg_stride, cfg.inv_temp, cfg.eps, dims.D, dims.DP, dims.F, dims.DV,
            MODE=dims.mode, CAUSAL=cfg.causal, HAS_INIT=has_init, HAS_MASK=kmask is not None,
            STORE_RES=store_res, BD=dims.BD, BDP=dims.BDP, BV=dims.BV, num_warps=dims.warps, num_stages=dims.stages,
        )  # fmt: skip
        if not cfg.causal:
            s1, z1 = prefix[:, 0], zprefix[:, 0]
        ctx.save_for_backward(
            q, k, v, o, res, wq, bq, wk, bk, kmask_arg, rden,
            prefix if has_init else dummy, zprefix if has_init else dummy,
        )  # fmt: skip
        ctx.cfg, ctx.dims, ctx.seg = cfg, dims, (seg_len, nseg, has_init, kmask is not None, store_res)
        ctx.mark_non_differentiable(s1, z1)
        return o, s1, z1

    @staticmethod
    def backward(ctx, grad_o, _grad_s, _grad_z):
        q, k, v, o, res, wq, bq, wk, bk, kmask, rden, prefix, zprefix = ctx.saved_tensors
        cfg, dims = ctx.cfg, ctx.dims
        seg_len, nseg, has_init, has_mask, has_res = ctx.seg
        b, h, t = q.shape[:3]
        bh = b * h
        g = _unit(grad_o)
        delta = torch.empty(bh, t, device=q.device, dtype=torch.float32)
        K._delta_kernel[(triton.cdiv(t, CHUNK), bh)](
            o,
            res,
            g,
            rden,
            delta,
            *_strides(o),
            *_strides(g),
            t,
            h,
            dims.DV,
            HAS_RES=has_res,
            BDV=_pow2(dims.DV),
        )
        if not cfg.causal or nseg > 1:
            r_seg, rz_seg = _segment_states(
                q, g, wq, bq, q, False, rden, delta, dims, cfg, t, h, nseg, seg_len, True
            )
        if cfg.causal:
            suffix = zsuffix = None
            if nseg > 1:
                suffix, zsuffix = _exclusive(r_seg, True), _exclusive(rz_seg, True)
            r_stride = 1
        else:
            suffix, zsuffix = r_seg.sum(1, keepdim=True), rz_seg.sum(1, keepdim=True)
            r_stride = 0
        atomic = dims.NV > 1
        if atomic:
            dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
            dk = torch.zeros(k.shape, device=k.device, dtype=torch.float32)
        else:
            dq, dk = torch.empty_like(q), torch.empty_like(k)
        dv = torch.empty_like(v)
        hedgehog = dims.mode != 0
        dwq = torch.zeros(h, dims.D, dims.DP, device=q.device, dtype=torch.float32) if hedgehog else q
        dbq = torch.zeros(h, dims.DP, device=q.device, dtype=torch.float32) if hedgehog else q
        dwk = torch.zeros_like(dwq) if hedgehog else q
        dbk = torch.zeros_like(dbq) if hedgehog else q
        common = dict(
            MODE=dims.mode, CAUSAL=cfg.causal, HAS_MASK=has_mask, ATOMIC=atomic,
            BD=dims.BD, BDP=dims.BDP, BV=dims.BV, num_warps=dims.warps, num_stages=dims.stages,
        )  # fmt: skip
        grid = (dims.NV, nseg, bh)
        K._dq_kernel[grid](
            q, k, v, g, dq, wq, bq, wk, bk, kmask, prefix, zprefix, rden, delta, dwq, dbq,
            *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dq), t,
            t, h, nseg, seg_len, 1 if cfg.causal else 0, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV,
            HAS_INIT=has_init, **common,
        )  # fmt: skip
        has_suffix = suffix is not None
        K._dkv_kernel[grid](
            q, k, v, g, dk, dv, wq, bq, wk, bk, kmask,
            suffix if has_suffix else q, zsuffix if has_suffix else q, rden, delta, dwk, dbk,
            *_strides(q), *_strides(k), *_strides(v), *_strides(g), *_strides(dk), *_strides(dv), t,
            t, h, nseg, seg_len, r_stride, cfg.inv_temp, dims.D, dims.DP, dims.F, dims.DV,
            HAS_INIT=has_suffix, **common,
        )  # fmt: skip
        if atomic:
            dq, dk = dq.to(q.dtype), dk.to(k.dtype)
        if not hedgehog:
            return dq, dk, dv, None, None, None, None, None, None, None, None
        return dq, dk, dv, dwq, dbq, dwk, dbk, None, None, None, None


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
    if not supported(dims.D, dims.F, dims.DV):
        raise ValueError(
            f"head dim {dims.D}, feature dim {dims.F}, value dim {dims.DV} exceed what the kernels "
            f"hold in registers (head dim <= {MAX_HEAD_DIM}, F <= {2 * MAX_FEATURE_HALF}); "
            "use the PyTorch forms in hedgehog.attention"
        )
    if state is not None and not causal:
        raise ValueError("a carried state only makes sense for causal attention")
    s0 = z0 = None
    if state is not None:
        s0, z0 = _pad_state(state[0].float(), state[1].float(), dims)
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
    form: str = "softmax",
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
    ``key_padding_mask`` (B, T): keys where it is 0 are left out. ``segment_len`` (a
    multiple of 64) overrides the automatic split of the sequence across programs.
    """
    if form not in ("softmax", "exp"):
        raise ValueError(f"Hedgehog form must be 'softmax' or 'exp', got {form!r}")
    params = [x.float().contiguous() for x in (weight_q, bias_q, weight_k, bias_k)]
    return _run(
        q, k, v, *params, K.MODES[form], causal, eps, temperature, state, key_padding_mask, segment_len
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
    s0, z0 = _pad_state(state[0].float(), state[1].float(), dims)
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
    form: str = "softmax",
    temperature: float = 1.0,
    eps: float = 1e-6,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One generated token (B, H, 1, D) against the carried state; returns output and new state."""
    return _decode(q, k, v, weight_q, bias_q, weight_k, bias_k, K.MODES[form], eps, temperature, state)


@torch.no_grad()
def linear_attention_decode(
    fq: Tensor, fk: Tensor, v: Tensor, state: tuple[Tensor, Tensor], eps: float = 1e-6
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One token of features (B, H, 1, F) against the carried state (generic feature maps)."""
    return _decode(fq, fk, v, None, None, None, None, 0, eps, 1.0, state)
