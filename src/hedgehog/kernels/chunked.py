"""Triton kernels for linear attention: Hedgehog fused, and generic on precomputed features.

Layout (batch, heads, tokens, dim) everywhere; any strides with a unit last stride.
Notation as in ``hedgehog.attention.linear_attention``: y_n = fq_n S_n / (fq_n z_n + eps),
S_n = sum_{i<=n} fk_i v_i^T, z_n = sum_{i<=n} fk_i (causal; non-causal sums run over all i).

The feature vector is handled as two halves [f_p, f_n] of width DP each, so S and z are
two (DP x DV) and two (DP,) fp32 accumulators:

- MODE 0 (generic): fq, fk are given; columns [0, DP) form f_p and [DP, F) form f_n.
- MODE 1 (Hedgehog softmax): z = (x W + b) / temperature, f = [softmax(z), softmax(-z)].
- MODE 2 (Hedgehog exp): f = [exp(z - m), exp(-z - m)], m = max|z| per token (constant).

In modes 1 and 2 the features are computed from each q and k tile in registers and never
written to memory; the backward recomputes them. The time axis is cut into segments: one
program walks the chunks (BT tokens) of one segment for one block of value columns and
stores each chunk's state from the segment start (`_state_kernel`, the only serial pass);
`_carry_kernel` then adds what each segment carries in (a prefix sum over the segments'
totals), so long sequences at small batch still fill the GPU with one walk.

Backward. With o = num / den', den' = den + eps and upstream g: g_hat = g / den' and
delta = -(g . o) / den' are the gradients of num and den, i.e. of linear attention on
augmented values v' = [v, 1] with upstream g' = [g_hat, delta]. Then
    dfq_n = sum_{i<=n} (g'_n . v'_i) fk_i           (forward walk, state S' = [S, z])
    dfk_i = sum_{n>=i} (g'_n . v'_i) fq_n           (reverse walk, state R' = sum fq g'^T)
    dv_i  = sum_{n>=i} (fq_n . fk_i) g_hat_n
and the feature map's backward gives dq, dk, dW, db.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

DELTA_BT = tl.constexpr(64)  # tokens per program of _delta_kernel
# Operand types of the matmuls (all accumulate in fp32). DOT, for the attention products:
# bf16, whose range holds the growing state and the 1/den-scaled gradients. PROJ, for the
# feature projection x W and its backward: fp16, whose 11-bit significand matches tf32's
# at full tensor-core rate and half the shared memory; q, k must stay within +-65504 and
# gradients are scaled per row / column into range before the cast. Triton's CPU
# interpreter multiplies bf16 operands wrongly and fp16 ones with fp16 sums (triton 3.9),
# so under TRITON_INTERPRET=1 both run in fp32 and the logic tests hold fp32 tolerances.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DOT = tl.constexpr(tl.float32 if INTERPRET else tl.bfloat16)
PROJ = tl.constexpr(tl.float32 if INTERPRET else tl.float16)
MODES = {"generic": 0, "softmax": 1, "exp": 2}


@triton.jit
def _half_features(z, m, cm, half, MODE: tl.constexpr):
    """Feature half ``half`` (0: f_p, 1: f_n) of z (rows x BDP, fp32); columns where cm is False are 0.

    MODE 1: softmax(+-z) per row. MODE 2: exp(+-z - m), m = max |z| per row (shared by both halves).
    """
    zs = z * (1.0 - 2.0 * half)
    if MODE == 1:
        zs = tl.where(cm[None, :], zs, float("-inf"))
        e = tl.exp(zs - tl.max(zs, 1)[:, None])
        return e / tl.sum(e, 1)[:, None]
    else:
        return tl.where(cm[None, :], tl.exp(zs - m[:, None]), 0.0)


@triton.jit
def _row_max_abs(z, cm):
    return tl.max(tl.where(cm[None, :], tl.abs(z), 0.0), 1)


@triton.jit
def _project(x, w_ptr, b_ptr, inv_temp, D, DP, BD: tl.constexpr, BDP: tl.constexpr):
    """z = (x W + b) / temperature for a tile x (BT x BD, PROJ), W (D x DP, PROJ) of this head."""
    offs_d = tl.arange(0, BD)
    offs_p = tl.arange(0, BDP)
    w = tl.load(
        w_ptr + offs_d[:, None] * DP + offs_p[None, :],
        mask=(offs_d[:, None] < D) & (offs_p[None, :] < DP),
        other=0.0,
    )
    b = tl.load(b_ptr + offs_p, mask=offs_p < DP, other=0.0)
    return (tl.dot(x, w) + b[None, :]) * inv_temp


@triton.jit
def _tile_z(
    x_ptr,
    stride_t,
    offs_t,
    rm,
    w_ptr,
    b_ptr,
    inv_temp,
    D,
    DP,
    MODE: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BT: tl.constexpr,
):
    """Hedgehog modes: z = (x W + b) / T of one tile (BT x BDP, fp32), the tile x (PROJ) and the
    exp form's row max m. Generic mode: nothing is computed (the features are loaded per half)."""
    offs_p = tl.arange(0, BDP)
    if MODE == 0:
        z = tl.zeros((BT, BDP), tl.float32)
        return z, z, tl.zeros((BT,), tl.float32)
    else:
        offs_d = tl.arange(0, BD)
        x = tl.load(
            x_ptr + offs_t[:, None] * stride_t + offs_d[None, :],
            mask=rm[:, None] & (offs_d[None, :] < D),
            other=0.0,
        ).to(PROJ)
        z = _project(x, w_ptr, b_ptr, inv_temp, D, DP, BD, BDP)
        m = _row_max_abs(z, offs_p < DP) if MODE == 2 else tl.zeros((BT,), tl.float32)
        return z, x, m


@triton.jit
def _load_half(x_ptr, stride_t, offs_t, rm, half, DP, F, BDP: tl.constexpr):
    """Feature half ``half`` of one tile (BT x BDP, fp32) of features written in memory (B, H, T, F)."""
    offs_p = tl.arange(0, BDP)
    width = DP + half * (F - 2 * DP)
    return tl.load(
        x_ptr + offs_t[:, None] * stride_t + half * DP + offs_p[None, :],
        mask=rm[:, None] & (offs_p[None, :] < width),
        other=0.0,
    ).to(tl.float32)


@triton.jit
def _tile_half(z, m, x_ptr, stride_t, offs_t, rm, half, DP, F, MODE: tl.constexpr, BDP: tl.constexpr):
    """Feature half ``half`` of one tile (BT x BDP, fp32): from z (Hedgehog) or loaded (generic)."""
    if MODE == 0:
        return _load_half(x_ptr, stride_t, offs_t, rm, half, DP, F, BDP)
    else:
        return _half_features(z, m, tl.arange(0, BDP) < DP, half, MODE)


@triton.jit
def _half_backward(f, df, half, MODE: tl.constexpr):
    """The part of dL/dz (z before the temperature) that flows through feature half ``half``."""
    sign = 1.0 - 2.0 * half
    if MODE == 1:
        return sign * f * (df - tl.sum(df * f, 1)[:, None])
    else:
        return sign * df * f


@triton.jit
def _store_half(ptr, stride_t, offs_t, rm, df, half, DP, F, ATOMIC: tl.constexpr, BDP: tl.constexpr):
    """Generic mode: store (or add) the gradient of one feature half of one tile."""
    offs_p = tl.arange(0, BDP)
    mask = rm[:, None] & (offs_p[None, :] < DP + half * (F - 2 * DP))
    p = ptr + offs_t[:, None] * stride_t + half * DP + offs_p[None, :]
    if ATOMIC:
        tl.atomic_add(p, df, mask=mask)
    else:
        tl.store(p, df.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP: tl.constexpr):
    """hs, hz advanced to the stored states of one (batch, head) (NCH chunks x 2 halves).

    64-bit: hs can exceed 2^31 elements (Llama-2's shape at 32k tokens); offsets within one
    (batch, head) stay 32-bit.
    """
    return hs_ptr + (ibh * NCH).to(tl.int64) * (2 * BDP * DV), hz_ptr + ibh * NCH * 2 * BDP


@triton.jit
def _state_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    kmask_ptr,
    rden_ptr,
    delta_ptr,
    hs_ptr,
    hz_ptr,
    s1_ptr,
    z1_ptr,
    sxb,
    sxh,
    sxt,
    syb,
    syh,
    syt,
    smb,
    T,
    H,
    NSEG,
    NCH,
    seg_len,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    BWD: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    WRITE_CHUNKS: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
    BT: tl.constexpr,
):
    """Walk the chunks of one segment for one feature half, summing f(x)^T y and f(x) w: the serial pass.

    Forward (BWD False): x = k, y = v, w = 1 (key mask): the S, z of the forward.
    Backward (BWD True, REVERSE True): x = q, y = g / den', w = delta: R, r, summed from the end.
    Programs: (value block x feature half, segment, batch x head). Each segment's walk starts
    from zero: with WRITE_CHUNKS the segment-local state before each chunk (the segment's chunks
    earlier in walk order) goes to hs (DOT type) and hz (fp32), and the segment's total goes to
    s1, z1 (BH, NSEG, 2, BDP, DV); `_carry_kernel` adds the earlier segments to hs, hz.
    """
    ivh, iseg, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    iv, half = ivh // 2, ivh % 2
    ib, ih = ibh // H, ibh % H
    x_ptr += ib * sxb + ih * sxh
    y_ptr += ib * syb + ih * syh
    w_ptr += ih * D * DP
    b_ptr += ih * DP
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    vm = offs_v[None, :] < DV
    seg = (ibh * NSEG + iseg) * 2 + half
    if WRITE_CHUNKS:
        hs_ptr, hz_ptr = _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP)
    s = tl.zeros((BDP, BV), tl.float32)
    zs = tl.zeros((BDP,), tl.float32)
    t0 = iseg * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    n_chunks = tl.cdiv(t1 - t0, BT)
    for c in range(n_chunks):
        ic = t0 // BT + n_chunks - 1 - c if REVERSE else t0 // BT + c
        if WRITE_CHUNKS:
            hc = ic * 2 + half
            tl.store(hs_ptr + (hc * BDP + offs_p[:, None]) * DV + offs_v[None, :], s.to(DOT), mask=vm)
            if iv == 0:
                tl.store(hz_ptr + hc * BDP + offs_p, zs)
        offs_t = ic * BT + tl.arange(0, BT)
        rm = offs_t < t1
        z, _, m = _tile_z(x_ptr, sxt, offs_t, rm, w_ptr, b_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
        f = _tile_half(z, m, x_ptr, sxt, offs_t, rm, half, DP, F, MODE, BDP)
        y = tl.load(y_ptr + offs_t[:, None] * syt + offs_v[None, :], mask=rm[:, None] & vm, other=0.0)
        if BWD:
            rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            w = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            y = (y.to(tl.float32) * rden[:, None]).to(DOT)
            f = tl.where(rm[:, None], f, 0.0)
            zs += tl.sum(f * w[:, None], 0)
        else:
            w = rm.to(tl.float32)
            if HAS_MASK:
                w = w * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
            f = f * w[:, None]
            zs += tl.sum(f, 0)
            y = y.to(DOT)
        s += tl.dot(tl.trans(f.to(DOT)), y)
    tl.store(s1_ptr + (seg * BDP + offs_p[:, None]) * DV + offs_v[None, :], s, mask=vm)
    if iv == 0:
        tl.store(z1_ptr + seg * BDP + offs_p, zs)


@triton.jit
def _carry_kernel(
    hs_ptr, hz_ptr, pre_ptr, prez_ptr, NCH, NSEG, seg_chunks, DV, BDP: tl.constexpr, BV: tl.constexpr
):
    """hs, hz += what each chunk's segment carries in (pre, prez: BH, NSEG, 2, BDP, DV fp32).

    Programs: (chunk, value block x feature half, batch x head); the sum runs in fp32.
    """
    ic, ivh, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    iv, half = ivh // 2, ivh % 2
    offs_p = tl.arange(0, BDP)
    offs_v = iv * BV + tl.arange(0, BV)
    vm = offs_v[None, :] < DV
    hs_ptr, hz_ptr = _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP)
    hc = ic * 2 + half
    pc = (ibh * NSEG + ic // seg_chunks) * 2 + half
    ps = hs_ptr + (hc * BDP + offs_p[:, None]) * DV + offs_v[None, :]
    s = tl.load(ps, mask=vm, other=0.0).to(tl.float32)
    s += tl.load(pre_ptr + (pc * BDP + offs_p[:, None]) * DV + offs_v[None, :], mask=vm, other=0.0)
    tl.store(ps, s.to(ps.dtype.element_ty), mask=vm)
    if iv == 0:
        pz = hz_ptr + hc * BDP + offs_p
        tl.store(pz, tl.load(pz) + tl.load(prez_ptr + pc * BDP + offs_p))


@triton.jit
def _load_state(hs_ptr, hz_ptr, hc, offs_p, offs_v, DV, BDP: tl.constexpr):
    """One half of one stored chunk state (index hc within the program's batch and head):
    S (BDP x BV, DOT) and z (BDP, fp32)."""
    s = tl.load(
        hs_ptr + (hc * BDP + offs_p[:, None]) * DV + offs_v[None, :], mask=offs_v[None, :] < DV, other=0.0
    )
    return s.to(DOT), tl.load(hz_ptr + hc * BDP + offs_p)


@triton.jit
def _inverse_den(den, eps):
    """1 / den' = 1 / (den + eps) per row, and 0 for a row that sees no key at all (left padding, every key
    masked): there den = 0 and num = 0, so its output is 0 and nothing flows back through it, exactly;
    1 / eps (1e6) would overflow float16 in the backward's g / den' (NaN in dk on the H200)."""
    return tl.where(den != 0.0, 1.0 / (den + eps), 0.0)


@triton.jit
def _fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    res_ptr,
    wq_ptr,
    bq_ptr,
    wk_ptr,
    bk_ptr,
    kmask_ptr,
    hs_ptr,
    hz_ptr,
    rden_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    svb,
    svh,
    svt,
    sob,
    soh,
    sot,
    smb,
    T,
    H,
    NCH,
    inv_temp,
    eps,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    STORE_RES: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
    BT: tl.constexpr,
):
    """Outputs of one chunk for one value block, from the stored state before it (no carried state).

    Causal: hs, hz hold the state before each chunk (NCH entries per (batch, head)) and the
    intra-chunk term is added. Non-causal: hs, hz hold one entry, the total. The feature
    halves are taken one after the other (fewer live registers). With STORE_RES the rounding
    residual o - half(o) goes to res, so that the backward's delta = -(g . o) / den' sees o
    to fp32 accuracy (delta multiplies terms that cancel).
    """
    iv, ic, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    v_ptr += ib * svb + ih * svh
    o_ptr += ib * sob + ih * soh
    res_ptr += ib * sob + ih * soh
    wq_ptr += ih * D * DP
    wk_ptr += ih * D * DP
    bq_ptr += ih * DP
    bk_ptr += ih * DP
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    vm = offs_v < DV
    offs_t = ic * BT + tl.arange(0, BT)
    rm = offs_t < T
    hs_ptr, hz_ptr = _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP)
    hc = ic * 2 if CAUSAL else 0
    zq, _, mq = _tile_z(q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
    num = tl.zeros((BT, BV), tl.float32)
    den = tl.zeros((BT,), tl.float32)
    if CAUSAL:
        zk, _, mk = _tile_z(k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
        kw = rm.to(tl.float32)
        if HAS_MASK:
            kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
        a = tl.zeros((BT, BT), tl.float32)
    for half in tl.static_range(2):
        fq = _tile_half(zq, mq, q_ptr, sqt, offs_t, rm, half, DP, F, MODE, BDP).to(DOT)
        s, zs = _load_state(hs_ptr, hz_ptr, hc + half, offs_p, offs_v, DV, BDP)
        num += tl.dot(fq, s)
        den += tl.sum(fq.to(tl.float32) * zs[None, :], 1)
        if CAUSAL:
            fk = _tile_half(zk, mk, k_ptr, skt, offs_t, rm, half, DP, F, MODE, BDP)
            a += tl.dot(fq, tl.trans((fk * kw[:, None]).to(DOT)))
    if CAUSAL:
        v = tl.load(
            v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
        )
        a = tl.where(offs_t[:, None] >= offs_t[None, :], a, 0.0)
        num += tl.dot(a.to(DOT), v.to(DOT))
        den += tl.sum(a, 1)
    rden = _inverse_den(den, eps)
    o = num * rden[:, None]
    o_low = o.to(o_ptr.dtype.element_ty)
    o_offs = offs_t[:, None] * sot + offs_v[None, :]
    tl.store(o_ptr + o_offs, o_low, mask=rm[:, None] & vm[None, :])
    if STORE_RES:
        tl.store(
            res_ptr + o_offs,
            (o - o_low.to(tl.float32)).to(o_ptr.dtype.element_ty),
            mask=rm[:, None] & vm[None, :],
        )
    if iv == 0:
        tl.store(rden_ptr + ibh * T + offs_t, rden, mask=rm)


@triton.jit
def _delta_kernel(
    o_ptr,
    res_ptr,
    g_ptr,
    rden_ptr,
    delta_ptr,
    sob,
    soh,
    sot,
    sgb,
    sgh,
    sgt,
    T,
    H,
    DV,
    HAS_RES: tl.constexpr,
    BDV: tl.constexpr,
):
    """delta_n = -(g_n . o_n) / den'_n, the gradient of the denominator (o plus its residual)."""
    it, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    offs_t = it * DELTA_BT + tl.arange(0, DELTA_BT)
    offs_v = tl.arange(0, BDV)
    m = (offs_t[:, None] < T) & (offs_v[None, :] < DV)
    o_offs = ib * sob + ih * soh + offs_t[:, None] * sot + offs_v[None, :]
    o = tl.load(o_ptr + o_offs, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        o += tl.load(res_ptr + o_offs, mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + ib * sgb + ih * sgh + offs_t[:, None] * sgt + offs_v[None, :], mask=m, other=0.0)
    rden = tl.load(rden_ptr + ibh * T + offs_t, mask=offs_t < T, other=0.0)
    delta = -tl.sum(o * g.to(tl.float32), 1) * rden
    tl.store(delta_ptr + ibh * T + offs_t, delta, mask=offs_t < T)


@triton.jit
def _store_input_grad(
    ptr, stride_t, offs_t, rm, dz, w_ptr, D, DP, ATOMIC: tl.constexpr, BD: tl.constexpr, BDP: tl.constexpr
):
    """Store (or add) dL/dx = dz W^T of one tile; dz (BT x BDP, fp32) with the temperature applied."""
    offs_p = tl.arange(0, BDP)
    offs_d = tl.arange(0, BD)
    w = tl.load(
        w_ptr + offs_d[:, None] * DP + offs_p[None, :],
        mask=(offs_d[:, None] < D) & (offs_p[None, :] < DP),
        other=0.0,
    )
    # dz into PROJ range: rows scaled by their max
    row = tl.max(tl.abs(dz), 1) + 1e-30
    dx = tl.dot((dz / row[:, None]).to(PROJ), tl.trans(w)) * row[:, None]
    pd = ptr + offs_t[:, None] * stride_t + offs_d[None, :]
    md = rm[:, None] & (offs_d[None, :] < D)
    if ATOMIC:
        tl.atomic_add(pd, dx, mask=md)
    else:
        tl.store(pd, dx.to(ptr.dtype.element_ty), mask=md)


@triton.jit
def _write_input_grad(
    ptr,
    stride_t,
    offs_t,
    rm,
    dz,
    x,
    w_ptr,
    dw,
    db,
    inv_temp,
    D,
    DP,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
):
    """Hedgehog modes: from dL/dz of one tile, store (or add) dL/dx = dz W^T / T and grow dW, db."""
    offs_p = tl.arange(0, BDP)
    dz = tl.where(rm[:, None] & (offs_p[None, :] < DP), dz * inv_temp, 0.0)
    _store_input_grad(ptr, stride_t, offs_t, rm, dz, w_ptr, D, DP, ATOMIC, BD, BDP)
    # dz into PROJ range for dW: columns scaled by their max
    col = tl.max(tl.abs(dz), 0) + 1e-30
    dw += tl.dot(tl.trans(x), (dz / col[None, :]).to(PROJ)) * col[None, :]
    db += tl.sum(dz, 0)
    return dw, db


@triton.jit
def _add_weight_grads(dw_ptr, db_ptr, dw, db, ih, D, DP, BD: tl.constexpr, BDP: tl.constexpr):
    """Add one program's dW (BD x BDP) and db (BDP,) of head ih to the fp32 totals."""
    offs_d = tl.arange(0, BD)
    offs_p = tl.arange(0, BDP)
    mw = (offs_d[:, None] < D) & (offs_p[None, :] < DP)
    tl.atomic_add(dw_ptr + ih * D * DP + offs_d[:, None] * DP + offs_p[None, :], dw, mask=mw)
    tl.atomic_add(db_ptr + ih * DP + offs_p, db, mask=offs_p < DP)


@triton.jit
def _dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    dq_ptr,
    wq_ptr,
    bq_ptr,
    wk_ptr,
    bk_ptr,
    kmask_ptr,
    hs_ptr,
    hz_ptr,
    rden_ptr,
    delta_ptr,
    dw_ptr,
    db_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    svb,
    svh,
    svt,
    sgb,
    sgh,
    sgt,
    sdb,
    sdh,
    sdt,
    smb,
    T,
    H,
    NCH,
    group_len,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
    BT: tl.constexpr,
):
    """dq (and dWq, dbq) for a group of chunks, each from the stored forward state S' = [S, z] before it.

    The chunks of a group are independent (no carried state); the group only shares the
    dW, db accumulators, added atomically once per program.
    """
    iv, igrp, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    v_ptr += ib * svb + ih * svh
    g_ptr += ib * sgb + ih * sgh
    dq_ptr += ib * sdb + ih * sdh
    wq_ptr += ih * D * DP
    wk_ptr += ih * D * DP
    bq_ptr += ih * DP
    bk_ptr += ih * DP
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    vm = offs_v < DV
    hs_ptr, hz_ptr = _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP)
    first = (iv == 0).to(tl.float32)
    dw = tl.zeros((BD, BDP), tl.float32)
    db = tl.zeros((BDP,), tl.float32)
    t0 = igrp * group_len
    t1 = tl.minimum(t0 + group_len, T)
    for start in range(t0, t1, BT):
        offs_t = start + tl.arange(0, BT)
        rm = offs_t < T
        hc = start // BT * 2 if CAUSAL else 0
        zq, xq, mq = _tile_z(q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
        g = tl.load(
            g_ptr + offs_t[:, None] * sgt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
        )
        rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
        delta = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0) * first
        g = (g.to(tl.float32) * rden[:, None]).to(DOT)
        if CAUSAL:
            zk, _, mk = _tile_z(k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
            kw = rm.to(tl.float32)
            if HAS_MASK:
                kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
            v = tl.load(
                v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
            )
            p = tl.dot(g, tl.trans(v.to(DOT))) + delta[:, None]
            p = tl.where((offs_t[:, None] >= offs_t[None, :]) & rm[None, :], p, 0.0).to(DOT)
        dz = tl.zeros((BT, BDP), tl.float32)
        for half in tl.static_range(2):
            s, zs = _load_state(hs_ptr, hz_ptr, hc + half, offs_p, offs_v, DV, BDP)
            df = tl.dot(g, tl.trans(s)) + delta[:, None] * zs[None, :]
            if CAUSAL:
                fk = _tile_half(zk, mk, k_ptr, skt, offs_t, rm, half, DP, F, MODE, BDP)
                df += tl.dot(p, (fk * kw[:, None]).to(DOT))
            if MODE == 0:
                _store_half(dq_ptr, sdt, offs_t, rm, df, half, DP, F, ATOMIC, BDP)
            else:
                fq = _tile_half(zq, mq, q_ptr, sqt, offs_t, rm, half, DP, F, MODE, BDP)
                dz += _half_backward(fq, df, half, MODE)
        if MODE != 0:
            dw, db = _write_input_grad(
                dq_ptr, sdt, offs_t, rm, dz, xq, wq_ptr, dw, db, inv_temp, D, DP, ATOMIC, BD, BDP
            )
    if MODE != 0:
        _add_weight_grads(dw_ptr, db_ptr, dw, db, ih, D, DP, BD, BDP)


@triton.jit
def _dkv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    dk_ptr,
    dv_ptr,
    wq_ptr,
    bq_ptr,
    wk_ptr,
    bk_ptr,
    kmask_ptr,
    hr_ptr,
    hrz_ptr,
    rden_ptr,
    delta_ptr,
    dw_ptr,
    db_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    svb,
    svh,
    svt,
    sgb,
    sgh,
    sgt,
    sdb,
    sdh,
    sdt,
    svvb,
    svvh,
    svvt,
    smb,
    T,
    H,
    NCH,
    group_len,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
    BT: tl.constexpr,
):
    """dk, dv (and dWk, dbk) for a group of chunks, each from the stored state R' = sum fq g'^T after it."""
    iv, igrp, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    v_ptr += ib * svb + ih * svh
    g_ptr += ib * sgb + ih * sgh
    dk_ptr += ib * sdb + ih * sdh
    dv_ptr += ib * svvb + ih * svvh
    wq_ptr += ih * D * DP
    wk_ptr += ih * D * DP
    bq_ptr += ih * DP
    bk_ptr += ih * DP
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    vm = offs_v < DV
    hr_ptr, hrz_ptr = _state_ptrs(hr_ptr, hrz_ptr, ibh, NCH, DV, BDP)
    first = (iv == 0).to(tl.float32)
    dw = tl.zeros((BD, BDP), tl.float32)
    db = tl.zeros((BDP,), tl.float32)
    t0 = igrp * group_len
    t1 = tl.minimum(t0 + group_len, T)
    for start in range(t0, t1, BT):
        offs_t = start + tl.arange(0, BT)
        rm = offs_t < T
        hc = start // BT * 2 if CAUSAL else 0
        zk, xk, mk = _tile_z(k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
        kw = rm.to(tl.float32)
        if HAS_MASK:
            kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
        v = tl.load(
            v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
        )
        v = v.to(DOT)
        if CAUSAL:
            zq, _, mq = _tile_z(q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, MODE, BD, BDP, BT)
            g = tl.load(
                g_ptr + offs_t[:, None] * sgt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
            )
            rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            delta = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0) * first
            g = (g.to(tl.float32) * rden[:, None]).to(DOT)
            causal = offs_t[None, :] >= offs_t[:, None]
            pt = tl.dot(v, tl.trans(g)) + delta[None, :]
            pt = tl.where(causal, pt, 0.0).to(DOT)
            at = tl.zeros((BT, BT), tl.float32)
        dv = tl.zeros((BT, BV), tl.float32)
        dz = tl.zeros((BT, BDP), tl.float32)
        for half in tl.static_range(2):
            r, rz = _load_state(hr_ptr, hrz_ptr, hc + half, offs_p, offs_v, DV, BDP)
            fk = _tile_half(zk, mk, k_ptr, skt, offs_t, rm, half, DP, F, MODE, BDP)
            fke = (fk * kw[:, None]).to(DOT)
            dv += tl.dot(fke, r)
            df = tl.dot(v, tl.trans(r)) + rz[None, :] * first
            if CAUSAL:
                fq = _tile_half(zq, mq, q_ptr, sqt, offs_t, rm, half, DP, F, MODE, BDP)
                fq = tl.where(rm[:, None], fq, 0.0).to(DOT)
                at += tl.dot(fke, tl.trans(fq))
                df += tl.dot(pt, fq)
            df = df * kw[:, None]
            if MODE == 0:
                _store_half(dk_ptr, sdt, offs_t, rm, df, half, DP, F, ATOMIC, BDP)
            else:
                dz += _half_backward(fk, df, half, MODE)
        if CAUSAL:
            at = tl.where(causal, at, 0.0).to(DOT)
            dv += tl.dot(at, g)
        tl.store(
            dv_ptr + offs_t[:, None] * svvt + offs_v[None, :],
            dv.to(dv_ptr.dtype.element_ty),
            mask=rm[:, None] & vm[None, :],
        )
        if MODE != 0:
            dw, db = _write_input_grad(
                dk_ptr, sdt, offs_t, rm, dz, xk, wk_ptr, dw, db, inv_temp, D, DP, ATOMIC, BD, BDP
            )
    if MODE != 0:
        _add_weight_grads(dw_ptr, db_ptr, dw, db, ih, D, DP, BD, BDP)


@triton.jit
def _decode_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    wq_ptr,
    bq_ptr,
    wk_ptr,
    bk_ptr,
    s0_ptr,
    z0_ptr,
    s1_ptr,
    z1_ptr,
    sqb,
    sqh,
    skb,
    skh,
    svb,
    svh,
    sob,
    soh,
    H,
    inv_temp,
    eps,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
):
    """One token against the carried state: S += fk v^T, z += fk, y = fq S / (fq z + eps)."""
    iv, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    offs_p = tl.arange(0, BDP)
    offs_v = iv * BV + tl.arange(0, BV)
    vm = offs_v < DV
    if MODE == 0:
        q_ptr += ib * sqb + ih * sqh
        k_ptr += ib * skb + ih * skh
        qp = tl.load(q_ptr + offs_p, mask=offs_p < DP, other=0.0).to(tl.float32)[None, :]
        qn = tl.load(q_ptr + DP + offs_p, mask=offs_p < F - DP, other=0.0).to(tl.float32)[None, :]
        kp = tl.load(k_ptr + offs_p, mask=offs_p < DP, other=0.0).to(tl.float32)[None, :]
        kn = tl.load(k_ptr + DP + offs_p, mask=offs_p < F - DP, other=0.0).to(tl.float32)[None, :]
    else:
        offs_d = tl.arange(0, BD)
        mw = (offs_d[:, None] < D) & (offs_p[None, :] < DP)
        wq = tl.load(wq_ptr + ih * D * DP + offs_d[:, None] * DP + offs_p[None, :], mask=mw, other=0.0)
        wk = tl.load(wk_ptr + ih * D * DP + offs_d[:, None] * DP + offs_p[None, :], mask=mw, other=0.0)
        bq = tl.load(bq_ptr + ih * DP + offs_p, mask=offs_p < DP, other=0.0)
        bk = tl.load(bk_ptr + ih * DP + offs_p, mask=offs_p < DP, other=0.0)
        xq = tl.load(q_ptr + ib * sqb + ih * sqh + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
        xk = tl.load(k_ptr + ib * skb + ih * skh + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
        zq = (tl.sum(xq[:, None] * wq, 0) + bq) * inv_temp
        zk = (tl.sum(xk[:, None] * wk, 0) + bk) * inv_temp
        zq, zk = zq[None, :], zk[None, :]
        cm = offs_p < DP
        mq, mk = _row_max_abs(zq, cm), _row_max_abs(zk, cm)
        qp, qn = _half_features(zq, mq, cm, 0, MODE), _half_features(zq, mq, cm, 1, MODE)
        kp, kn = _half_features(zk, mk, cm, 0, MODE), _half_features(zk, mk, cm, 1, MODE)
    v = tl.load(v_ptr + ib * svb + ih * svh + offs_v, mask=vm, other=0.0).to(tl.float32)[None, :]
    sidx = (ibh * 2 * BDP + offs_p[:, None]) * DV + offs_v[None, :]
    nidx = ((ibh * 2 + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :]
    sp = tl.load(s0_ptr + sidx, mask=vm[None, :], other=0.0) + tl.trans(kp) * v
    sn = tl.load(s0_ptr + nidx, mask=vm[None, :], other=0.0) + tl.trans(kn) * v
    zp = tl.load(z0_ptr + ibh * 2 * BDP + offs_p[None, :]) + kp
    zn = tl.load(z0_ptr + (ibh * 2 + 1) * BDP + offs_p[None, :]) + kn
    num = tl.sum(tl.trans(qp) * sp, 0) + tl.sum(tl.trans(qn) * sn, 0)
    den = tl.sum(qp * zp, 1) + tl.sum(qn * zn, 1)
    tl.store(o_ptr + ib * sob + ih * soh + offs_v, (num / (den + eps)).to(o_ptr.dtype.element_ty), mask=vm)
    tl.store(s1_ptr + sidx, sp, mask=vm[None, :])
    tl.store(s1_ptr + nidx, sn, mask=vm[None, :])
    if iv == 0:
        tl.store(z1_ptr + ibh * 2 * BDP + offs_p[None, :], zp)
        tl.store(z1_ptr + (ibh * 2 + 1) * BDP + offs_p[None, :], zn)


@triton.jit
def _map_fwd_kernel(
    x_ptr,
    f_ptr,
    w_ptr,
    b_ptr,
    sxb,
    sxh,
    sxt,
    sfb,
    sfh,
    sft,
    T,
    H,
    inv_temp,
    D,
    DP,
    F,
    MODE: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BT: tl.constexpr,
):
    """The Hedgehog features of one tile of tokens, written: f = [f(z), f(-z)], z = (x W + b) / T."""
    it, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    offs_t = it * BT + tl.arange(0, BT)
    rm = offs_t < T
    x_ptr += ib * sxb + ih * sxh
    f_ptr += ib * sfb + ih * sfh
    z, _, m = _tile_z(
        x_ptr, sxt, offs_t, rm, w_ptr + ih * D * DP, b_ptr + ih * DP, inv_temp, D, DP, MODE, BD, BDP, BT
    )
    for half in tl.static_range(2):
        f = _half_features(z, m, tl.arange(0, BDP) < DP, half, MODE)
        _store_half(f_ptr, sft, offs_t, rm, f, half, DP, F, False, BDP)


@triton.jit
def _map_bwd_kernel(
    x_ptr,
    df_ptr,
    dx_ptr,
    dz_ptr,
    w_ptr,
    b_ptr,
    sxb,
    sxh,
    sxt,
    sgb,
    sgh,
    sgt,
    sdb,
    sdh,
    sdt,
    szb,
    szh,
    szt,
    T,
    H,
    inv_temp,
    D,
    DP,
    F,
    MODE: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BT: tl.constexpr,
):
    """From df (the features' gradient) of one tile, features recomputed from x: dx, and dz = dL/dz
    (temperature applied) written for dW = x^T dz and db = sum dz as GEMMs outside (no accumulator
    here: at head dim 128 one spilled 1.8 KB per thread on sm_90)."""
    it, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    offs_t = it * BT + tl.arange(0, BT)
    rm = offs_t < T
    offs_p = tl.arange(0, BDP)
    cm = offs_p < DP
    x_ptr += ib * sxb + ih * sxh
    df_ptr += ib * sgb + ih * sgh
    w_ptr += ih * D * DP
    z, _, m = _tile_z(x_ptr, sxt, offs_t, rm, w_ptr, b_ptr + ih * DP, inv_temp, D, DP, MODE, BD, BDP, BT)
    dz = tl.zeros((BT, BDP), tl.float32)
    for half in tl.static_range(2):
        f = _half_features(z, m, cm, half, MODE)
        df = _load_half(df_ptr, sgt, offs_t, rm, half, DP, F, BDP)
        dz += _half_backward(f, df, half, MODE)
    dz = tl.where(rm[:, None] & cm[None, :], dz * inv_temp, 0.0)
    _store_input_grad(dx_ptr + ib * sdb + ih * sdh, sdt, offs_t, rm, dz, w_ptr, D, DP, False, BD, BDP)
    pz = dz_ptr + ib * szb + ih * szh + offs_t[:, None] * szt + offs_p[None, :]
    tl.store(pz, dz.to(dz_ptr.dtype.element_ty), mask=rm[:, None] & cm[None, :])


@triton.jit
def _window_fwd_kernel(
    q_ptr,
    k_ptr,
    fq_ptr,
    fk_ptr,
    v_ptr,
    o_ptr,
    res_ptr,
    rden_ptr,
    gamma_ptr,
    hs_ptr,
    hz_ptr,
    kmask_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    sfb,
    sfh,
    sft,
    sgb,
    sgh,
    sgt,
    svb,
    svh,
    svt,
    sob,
    soh,
    sot,
    T,
    H,
    NCH,
    scale,
    eps,
    D,
    DP,
    F,
    DV,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
    BT: tl.constexpr,
    STORE_RES: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """Sliding-window hybrid (hedgehog.attention.window), causal, window = BT: outputs of one chunk c.

    Query i of chunk c sees keys i - BT < j <= i exactly (softmax terms exp(s_ij - m_i), s = q.k scale,
    m_i their max): the earlier part of its own chunk and the later part of chunk c - 1. Keys j <= i - BT
    enter linearly (phi(q_i) / gamma_h . phi(k_j)): chunks before c - 1 through the stored state before
    chunk c - 1, and the early part of chunk c - 1 exactly. One normaliser over both parts. Features are
    given (generic mode), fq and fk (B, H, T, F) in halves as the other kernels take them. For the
    backward: 1 / (den + eps) to rden and, with STORE_RES, o's rounding residual to res (as _fwd_kernel).
    HAS_MASK: keys where the (B, T) key mask is 0 leave the window (their features come zeroed).
    """
    iv, ic, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    fq_ptr += ib * sfb + ih * sfh
    fk_ptr += ib * sgb + ih * sgh
    v_ptr += ib * svb + ih * svh
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    offs_d = tl.arange(0, BD)
    vm = offs_v < DV
    offs_t = ic * BT + tl.arange(0, BT)
    offs_s = offs_t - BT  # chunk c - 1
    rm = offs_t < T
    pm = (offs_s >= 0) & (offs_s < T)
    has_prev = (ic > 0).to(tl.float32)
    hs_ptr, hz_ptr = _state_ptrs(hs_ptr, hz_ptr, ibh, NCH, DV, BDP)
    hc = tl.maximum(ic - 1, 0) * 2
    dm = offs_d[None, :] < D
    q = tl.load(q_ptr + offs_t[:, None] * sqt + offs_d[None, :], mask=rm[:, None] & dm, other=0.0).to(PROJ)
    kmask_ptr += ib * T
    kc = _keys_kept(kmask_ptr, offs_t, rm, HAS_MASK)
    kp = _keys_kept(kmask_ptr, offs_s, pm, HAS_MASK)
    a_cur, a_prev, _, _, _, _, _ = _window_scores(q, k_ptr, skt, offs_t, offs_s, kc, kp, scale, D, BD, BT)
    lin_prev = (tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]) & pm[None, :]
    inv_gamma = 1.0 / tl.load(gamma_ptr + ih)
    num = tl.zeros((BT, BV), tl.float32)
    den = tl.zeros((BT,), tl.float32)
    for half in tl.static_range(2):
        fq = _load_half(fq_ptr, sft, offs_t, rm, half, DP, F, BDP) * inv_gamma
        fkp = _load_half(fk_ptr, sgt, offs_s, pm, half, DP, F, BDP)
        s, zs = _load_state(hs_ptr, hz_ptr, hc + half, offs_p, offs_v, DV, BDP)
        num += tl.dot(fq.to(DOT), s) * has_prev
        den += tl.sum(fq * zs[None, :], 1) * has_prev
        a_prev += tl.where(lin_prev, tl.dot(fq.to(DOT), tl.trans(fkp.to(DOT))), 0.0)
    v = tl.load(v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0)
    vp = tl.load(v_ptr + offs_s[:, None] * svt + offs_v[None, :], mask=pm[:, None] & vm[None, :], other=0.0)
    num += tl.dot(a_cur.to(DOT), v.to(DOT)) + tl.dot(a_prev.to(DOT), vp.to(DOT))
    den += tl.sum(a_cur, 1) + tl.sum(a_prev, 1)
    rden = _inverse_den(den, eps)
    o = num * rden[:, None]
    o_low = o.to(o_ptr.dtype.element_ty)
    o_offs = ib * sob + ih * soh + offs_t[:, None] * sot + offs_v[None, :]
    tl.store(o_ptr + o_offs, o_low, mask=rm[:, None] & vm[None, :])
    if STORE_RES:
        tl.store(
            res_ptr + o_offs,
            (o - o_low.to(tl.float32)).to(o_ptr.dtype.element_ty),
            mask=rm[:, None] & vm[None, :],
        )
    if iv == 0:
        tl.store(rden_ptr + ibh * T + offs_t, rden, mask=rm)


@triton.jit
def _keys_kept(kmask_ptr, offs, valid, HAS_MASK: tl.constexpr):
    """The keys at offs that exist (valid) and that the key mask keeps (kmask_ptr at the row's batch)."""
    if HAS_MASK:
        valid = valid & (tl.load(kmask_ptr + offs, mask=valid, other=0.0) > 0)
    return valid


@triton.jit
def _window_scores(q, k_ptr, skt, offs_t, offs_s, rm, pm, scale, D, BD: tl.constexpr, BT: tl.constexpr):
    """The hybrid's window terms of one query chunk: exp(s - m) over its own chunk's keys (e_cur) and the
    previous chunk's (e_prev), 0 outside the window, where each row's max m is taken (at_cur, at_prev) and
    by how many keys (ties). rm, pm: the keys of the two chunks that count (that exist and that the key mask
    keeps)."""
    offs_d = tl.arange(0, BD)
    dm = offs_d[None, :] < D
    k = tl.load(k_ptr + offs_t[:, None] * skt + offs_d[None, :], mask=rm[:, None] & dm, other=0.0).to(PROJ)
    kp = tl.load(k_ptr + offs_s[:, None] * skt + offs_d[None, :], mask=pm[:, None] & dm, other=0.0).to(PROJ)
    row = tl.arange(0, BT)[:, None]
    col = tl.arange(0, BT)[None, :]
    win_cur = (row >= col) & rm[None, :]
    win_prev = (row < col) & pm[None, :]
    s_cur = tl.where(win_cur, tl.dot(q, tl.trans(k)) * scale, float("-inf"))
    s_prev = tl.where(win_prev, tl.dot(q, tl.trans(kp)) * scale, float("-inf"))
    m = tl.maximum(tl.max(s_cur, 1), tl.max(s_prev, 1))
    m = tl.where(m == float("-inf"), 0.0, m)
    e_cur = tl.where(win_cur, tl.exp(s_cur - m[:, None]), 0.0)
    e_prev = tl.where(win_prev, tl.exp(s_prev - m[:, None]), 0.0)
    at_cur = win_cur & (s_cur == m[:, None])
    at_prev = win_prev & (s_prev == m[:, None])
    ties = tl.sum(at_cur.to(tl.float32), 1) + tl.sum(at_prev.to(tl.float32), 1)
    return e_cur, e_prev, at_cur, at_prev, ties, k, kp


@triton.jit
def _g_hat(g_ptr, sgt, offs, rows, offs_v, vm, rden):
    """g / den' of the rows at offs, one block of value columns, in the DOT type."""
    g = tl.load(g_ptr + offs[:, None] * sgt + offs_v[None, :], mask=rows[:, None] & vm, other=0.0)
    return (g.to(tl.float32) * rden[:, None]).to(DOT)


@triton.jit
def _window_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    dq_ptr,
    rden_ptr,
    delta_ptr,
    ep_ptr,
    kmask_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    svb,
    svh,
    svt,
    sgb,
    sgh,
    sgt,
    sdb,
    sdh,
    sdt,
    T,
    H,
    scale,
    D,
    DV,
    BD: tl.constexpr,
    BV: tl.constexpr,
    NV: tl.constexpr,
    BT: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """The hybrid's window part backward, dq of one query chunk (the linear part's is the generic backward's).

    With g_hat = g / den', delta = -(g . o) / den', a window weight e_ij = exp(s_ij - m_i) gets
    P_ij = g_hat_i . v_j + delta_i; through m_i (the row's max, shared among ties as torch's amax does)
    ds_ij = e_ij P_ij - [j at the max] sum_k e_ik P_ik / ties. Stores dq (q's dtype) and each row's
    sum_j e_ij P_ij (ep, fp32): what `_window_dkv_kernel` needs for the max's share and the window
    factor's gradient.
    """
    ic, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    v_ptr += ib * svb + ih * svh
    g_ptr += ib * sgb + ih * sgh
    offs_t = ic * BT + tl.arange(0, BT)
    offs_s = offs_t - BT
    rm = offs_t < T
    pm = (offs_s >= 0) & (offs_s < T)
    offs_d = tl.arange(0, BD)
    dm = offs_d[None, :] < D
    q = tl.load(q_ptr + offs_t[:, None] * sqt + offs_d[None, :], mask=rm[:, None] & dm, other=0.0).to(PROJ)
    kmask_ptr += ib * T
    kc = _keys_kept(kmask_ptr, offs_t, rm, HAS_MASK)
    kpm = _keys_kept(kmask_ptr, offs_s, pm, HAS_MASK)
    e_cur, e_prev, at_cur, at_prev, ties, k, kp = _window_scores(
        q, k_ptr, skt, offs_t, offs_s, kc, kpm, scale, D, BD, BT
    )
    rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
    delta = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0)
    p_cur = tl.zeros((BT, BT), tl.float32) + delta[:, None]
    p_prev = tl.zeros((BT, BT), tl.float32) + delta[:, None]
    for iv in tl.static_range(NV):
        offs_v = iv * BV + tl.arange(0, BV)
        vm = offs_v[None, :] < DV
        g = _g_hat(g_ptr, sgt, offs_t, rm, offs_v, vm, rden)
        v = tl.load(v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm, other=0.0)
        vp = tl.load(v_ptr + offs_s[:, None] * svt + offs_v[None, :], mask=pm[:, None] & vm, other=0.0)
        p_cur += tl.dot(g, tl.trans(v.to(DOT)))
        p_prev += tl.dot(g, tl.trans(vp.to(DOT)))
    ep_cur = e_cur * p_cur
    ep_prev = e_prev * p_prev
    ep_row = tl.sum(ep_cur, 1) + tl.sum(ep_prev, 1)
    tl.store(ep_ptr + ibh * T + offs_t, ep_row, mask=rm)
    through_max = ep_row / tl.maximum(ties, 1.0)
    ds_cur = (ep_cur - tl.where(at_cur, through_max[:, None], 0.0)) * scale
    ds_prev = (ep_prev - tl.where(at_prev, through_max[:, None], 0.0)) * scale
    dq = tl.dot(ds_cur.to(DOT), k.to(DOT)) + tl.dot(ds_prev.to(DOT), kp.to(DOT))
    tl.store(
        dq_ptr + ib * sdb + ih * sdh + offs_t[:, None] * sdt + offs_d[None, :],
        dq.to(dq_ptr.dtype.element_ty),
        mask=rm[:, None] & dm,
    )


@triton.jit
def _window_dkv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    dk_ptr,
    dv_ptr,
    dvl_ptr,
    rden_ptr,
    delta_ptr,
    ep_ptr,
    kmask_ptr,
    sqb,
    sqh,
    sqt,
    skb,
    skh,
    skt,
    svb,
    svh,
    svt,
    sgb,
    sgh,
    sgt,
    sdkb,
    sdkh,
    sdkt,
    sdvb,
    sdvh,
    sdvt,
    slb,
    slh,
    slt,
    T,
    S,
    H,
    scale,
    D,
    DV,
    BD: tl.constexpr,
    BV: tl.constexpr,
    NV: tl.constexpr,
    BT: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """The hybrid's window part backward, dk and dv of one key chunk c, without atomics: the keys of chunk c
    are in the windows of the queries of chunk c (their own block) and of chunk c + 1 (their previous
    block), whose window terms are recomputed here, each row's max and ties with them; the max's share
    comes from the rows' sums ep of `_window_dq_kernel`. dv adds the linear part's dv_lin (keys < S,
    from the generic backward); dk and dv are stored in k's and v's dtype.
    """
    ic, ibh = tl.program_id(0), tl.program_id(1)
    ib, ih = ibh // H, ibh % H
    q_ptr += ib * sqb + ih * sqh
    k_ptr += ib * skb + ih * skh
    v_ptr += ib * svb + ih * svh
    g_ptr += ib * sgb + ih * sgh
    offs_c = ic * BT + tl.arange(0, BT)  # the chunk's keys, and the queries of the same chunk
    offs_n = offs_c + BT  # the next chunk's queries
    offs_p = offs_c - BT
    cm = offs_c < T
    nm = offs_n < T
    pm = (offs_p >= 0) & (offs_p < T)
    offs_d = tl.arange(0, BD)
    dm = offs_d[None, :] < D
    q_c = tl.load(q_ptr + offs_c[:, None] * sqt + offs_d[None, :], mask=cm[:, None] & dm, other=0.0).to(PROJ)
    q_n = tl.load(q_ptr + offs_n[:, None] * sqt + offs_d[None, :], mask=nm[:, None] & dm, other=0.0).to(PROJ)
    kmask_ptr += ib * T
    kc = _keys_kept(kmask_ptr, offs_c, cm, HAS_MASK)
    kn = _keys_kept(kmask_ptr, offs_n, nm, HAS_MASK)
    kp = _keys_kept(kmask_ptr, offs_p, pm, HAS_MASK)
    e_cc, _, at_cc, _, ties_c, _, _ = _window_scores(
        q_c, k_ptr, skt, offs_c, offs_p, kc, kp, scale, D, BD, BT
    )
    _, e_nc, _, at_nc, ties_n, _, _ = _window_scores(
        q_n, k_ptr, skt, offs_n, offs_c, kn, kc, scale, D, BD, BT
    )
    rden_c = tl.load(rden_ptr + ibh * T + offs_c, mask=cm, other=0.0)
    rden_n = tl.load(rden_ptr + ibh * T + offs_n, mask=nm, other=0.0)
    delta_c = tl.load(delta_ptr + ibh * T + offs_c, mask=cm, other=0.0)
    delta_n = tl.load(delta_ptr + ibh * T + offs_n, mask=nm, other=0.0)
    max_c = tl.load(ep_ptr + ibh * T + offs_c, mask=cm, other=0.0) / tl.maximum(ties_c, 1.0)
    max_n = tl.load(ep_ptr + ibh * T + offs_n, mask=nm, other=0.0) / tl.maximum(ties_n, 1.0)
    p_cc = tl.zeros((BT, BT), tl.float32) + delta_c[:, None]
    p_nc = tl.zeros((BT, BT), tl.float32) + delta_n[:, None]
    for iv in tl.static_range(NV):
        offs_v = iv * BV + tl.arange(0, BV)
        vm = offs_v[None, :] < DV
        g_c = _g_hat(g_ptr, sgt, offs_c, cm, offs_v, vm, rden_c)
        g_n = _g_hat(g_ptr, sgt, offs_n, nm, offs_v, vm, rden_n)
        v = tl.load(v_ptr + offs_c[:, None] * svt + offs_v[None, :], mask=cm[:, None] & vm, other=0.0).to(DOT)
        p_cc += tl.dot(g_c, tl.trans(v))
        p_nc += tl.dot(g_n, tl.trans(v))
        dv = tl.dot(tl.trans(e_cc.to(DOT)), g_c) + tl.dot(tl.trans(e_nc.to(DOT)), g_n)
        lm = (offs_c < S)[:, None] & vm
        dv += tl.load(
            dvl_ptr + ib * slb + ih * slh + offs_c[:, None] * slt + offs_v[None, :], mask=lm, other=0.0
        ).to(tl.float32)
        tl.store(
            dv_ptr + ib * sdvb + ih * sdvh + offs_c[:, None] * sdvt + offs_v[None, :],
            dv.to(dv_ptr.dtype.element_ty),
            mask=cm[:, None] & vm,
        )
    ds_cc = (e_cc * p_cc - tl.where(at_cc, max_c[:, None], 0.0)) * scale
    ds_nc = (e_nc * p_nc - tl.where(at_nc, max_n[:, None], 0.0)) * scale
    dk = tl.dot(tl.trans(ds_cc.to(DOT)), q_c.to(DOT)) + tl.dot(tl.trans(ds_nc.to(DOT)), q_n.to(DOT))
    tl.store(
        dk_ptr + ib * sdkb + ih * sdkh + offs_c[:, None] * sdkt + offs_d[None, :],
        dk.to(dk_ptr.dtype.element_ty),
        mask=cm[:, None] & dm,
    )
