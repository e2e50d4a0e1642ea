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
program walks the chunks (BT tokens) of one segment for one block of value columns. A
first pass sums each segment's state (`_state_kernel`), a prefix sum over segments gives
each program its starting state, so long sequences at small batch still fill the GPU.

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

BT = tl.constexpr(64)  # tokens per chunk
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
def _activate(z, cm, MODE: tl.constexpr):
    """Hedgehog feature halves of z (rows x BDP), columns where cm is False set to 0."""
    if MODE == 1:
        zp = tl.where(cm[None, :], z, float("-inf"))
        ep = tl.exp(zp - tl.max(zp, 1)[:, None])
        zn = tl.where(cm[None, :], -z, float("-inf"))
        en = tl.exp(zn - tl.max(zn, 1)[:, None])
        return ep / tl.sum(ep, 1)[:, None], en / tl.sum(en, 1)[:, None]
    else:
        m = tl.max(tl.where(cm[None, :], tl.abs(z), 0.0), 1)[:, None]
        fp = tl.where(cm[None, :], tl.exp(z - m), 0.0)
        fn = tl.where(cm[None, :], tl.exp(-z - m), 0.0)
        return fp, fn


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
def _tile_features(
    x_ptr,
    stride_t,
    offs_t,
    rm,
    w_ptr,
    b_ptr,
    inv_temp,
    D,
    DP,
    F,
    MODE: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
):
    """Feature halves (BT x BDP, fp32) of one tile, and the raw tile (BT x BD, PROJ)."""
    offs_p = tl.arange(0, BDP)
    if MODE == 0:
        fp = tl.load(
            x_ptr + offs_t[:, None] * stride_t + offs_p[None, :],
            mask=rm[:, None] & (offs_p[None, :] < DP),
            other=0.0,
        ).to(tl.float32)
        fn = tl.load(
            x_ptr + offs_t[:, None] * stride_t + DP + offs_p[None, :],
            mask=rm[:, None] & (offs_p[None, :] < F - DP),
            other=0.0,
        ).to(tl.float32)
        return fp, fn, fp
    else:
        offs_d = tl.arange(0, BD)
        x = tl.load(
            x_ptr + offs_t[:, None] * stride_t + offs_d[None, :],
            mask=rm[:, None] & (offs_d[None, :] < D),
            other=0.0,
        ).to(PROJ)
        fp, fn = _activate(_project(x, w_ptr, b_ptr, inv_temp, D, DP, BD, BDP), offs_p < DP, MODE)
        return fp, fn, x


@triton.jit
def _feature_backward(fp, fn, dfp, dfn, MODE: tl.constexpr):
    """dL/dz (times nothing else) from dL/df for the two halves; z -> -z on the second."""
    if MODE == 1:
        return fp * (dfp - tl.sum(dfp * fp, 1)[:, None]) - fn * (dfn - tl.sum(dfn * fn, 1)[:, None])
    else:
        return dfp * fp - dfn * fn


@triton.jit
def _state_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    kmask_ptr,
    rden_ptr,
    delta_ptr,
    s_ptr,
    z_ptr,
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
    seg_len,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    BWD: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
):
    """One segment's state: sum f(x)^T y and sum f(x) w over its tokens.

    Forward (BWD False): x = k, y = v, w = 1 (the S, z of the segment).
    Backward (BWD True): x = q, y = g / den', w = delta (the R, r of the segment).
    Written to s (BH, NSEG, 2, BDP, DV) and z (BH, NSEG, 2, BDP).
    """
    iv, iseg, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ib, ih = ibh // H, ibh % H
    x_ptr += ib * sxb + ih * sxh
    y_ptr += ib * syb + ih * syh
    w_ptr += ih * D * DP
    b_ptr += ih * DP
    offs_v = iv * BV + tl.arange(0, BV)
    offs_p = tl.arange(0, BDP)
    sp = tl.zeros((BDP, BV), tl.float32)
    sn = tl.zeros((BDP, BV), tl.float32)
    zp = tl.zeros((BDP,), tl.float32)
    zn = tl.zeros((BDP,), tl.float32)
    t0 = iseg * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    for start in range(t0, t1, BT):
        offs_t = start + tl.arange(0, BT)
        rm = offs_t < t1
        fp, fn, _ = _tile_features(x_ptr, sxt, offs_t, rm, w_ptr, b_ptr, inv_temp, D, DP, F, MODE, BD, BDP)
        y = tl.load(
            y_ptr + offs_t[:, None] * syt + offs_v[None, :],
            mask=rm[:, None] & (offs_v[None, :] < DV),
            other=0.0,
        ).to(tl.float32)
        if BWD:
            rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            w = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            y = y * rden[:, None]
        else:
            w = rm.to(tl.float32)
            if HAS_MASK:
                w = w * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
        if BWD:
            fp = tl.where(rm[:, None], fp, 0.0)
            fn = tl.where(rm[:, None], fn, 0.0)
            zp += tl.sum(fp * w[:, None], 0)
            zn += tl.sum(fn * w[:, None], 0)
        else:
            fp = fp * w[:, None]
            fn = fn * w[:, None]
            zp += tl.sum(fp, 0)
            zn += tl.sum(fn, 0)
        sp += tl.dot(tl.trans(fp.to(DOT)), y.to(DOT))
        sn += tl.dot(tl.trans(fn.to(DOT)), y.to(DOT))
    base = (ibh * NSEG + iseg) * 2
    vm = offs_v[None, :] < DV
    tl.store(s_ptr + (base * BDP + offs_p[:, None]) * DV + offs_v[None, :], sp, mask=vm)
    tl.store(s_ptr + ((base + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :], sn, mask=vm)
    if iv == 0:
        tl.store(z_ptr + base * BDP + offs_p, zp)
        tl.store(z_ptr + (base + 1) * BDP + offs_p, zn)


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
    s0_ptr,
    z0_ptr,
    s1_ptr,
    z1_ptr,
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
    NSEG,
    seg_len,
    s0_seg_stride,
    inv_temp,
    eps,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_INIT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    STORE_RES: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
):
    """Outputs of one segment for one value block, starting from the state s0, z0.

    Causal: the state enters as the prefix of the segment and is updated chunk by chunk;
    the final state is written to s1, z1 by the last segment. Non-causal: s0, z0 hold the
    total over the sequence and the intra-chunk term is not needed. State buffers hold
    NSEG entries per (batch, head) when s0_seg_stride is 1 and one shared entry when 0.
    With STORE_RES the rounding residual o - half(o) goes to res, so that the backward's
    delta = -(g . o) / den' sees o to fp32 accuracy (delta multiplies terms that cancel).
    """
    iv, iseg, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
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
    if HAS_INIT:
        base = ibh * (NSEG * s0_seg_stride + 1 - s0_seg_stride) + iseg * s0_seg_stride
        sp = tl.load(
            s0_ptr + (base * 2 * BDP + offs_p[:, None]) * DV + offs_v[None, :], mask=vm[None, :], other=0.0
        )
        sn = tl.load(
            s0_ptr + ((base * 2 + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :],
            mask=vm[None, :],
            other=0.0,
        )
        zp = tl.load(z0_ptr + base * 2 * BDP + offs_p)
        zn = tl.load(z0_ptr + (base * 2 + 1) * BDP + offs_p)
    else:
        sp = tl.zeros((BDP, BV), tl.float32)
        sn = tl.zeros((BDP, BV), tl.float32)
        zp = tl.zeros((BDP,), tl.float32)
        zn = tl.zeros((BDP,), tl.float32)
    t0 = iseg * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    for start in range(t0, t1, BT):
        offs_t = start + tl.arange(0, BT)
        rm = offs_t < t1
        qp, qn, _ = _tile_features(q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, F, MODE, BD, BDP)
        qp, qn = qp.to(DOT), qn.to(DOT)
        num = tl.dot(qp, sp.to(DOT)) + tl.dot(qn, sn.to(DOT))
        den = tl.sum(qp.to(tl.float32) * zp[None, :], 1) + tl.sum(qn.to(tl.float32) * zn[None, :], 1)
        if CAUSAL:
            kp, kn, _ = _tile_features(
                k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, F, MODE, BD, BDP
            )
            kw = rm.to(tl.float32)
            if HAS_MASK:
                kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
            kp = (kp * kw[:, None]).to(DOT)
            kn = (kn * kw[:, None]).to(DOT)
            v = tl.load(
                v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
            )
            v = v.to(DOT)
            a = tl.dot(qp, tl.trans(kp)) + tl.dot(qn, tl.trans(kn))
            a = tl.where(offs_t[:, None] >= offs_t[None, :], a, 0.0)
            num += tl.dot(a.to(DOT), v)
            den += tl.sum(a, 1)
            sp += tl.dot(tl.trans(kp), v)
            sn += tl.dot(tl.trans(kn), v)
            zp += tl.sum(kp.to(tl.float32), 0)
            zn += tl.sum(kn.to(tl.float32), 0)
        rden = 1.0 / (den + eps)
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
    if CAUSAL:  # noqa: SIM102 (a constexpr branch, then a run-time one)
        if iseg == NSEG - 1:
            tl.store(s1_ptr + (ibh * 2 * BDP + offs_p[:, None]) * DV + offs_v[None, :], sp, mask=vm[None, :])
            tl.store(
                s1_ptr + ((ibh * 2 + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :], sn, mask=vm[None, :]
            )
            if iv == 0:
                tl.store(z1_ptr + ibh * 2 * BDP + offs_p, zp)
                tl.store(z1_ptr + (ibh * 2 + 1) * BDP + offs_p, zn)


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
    offs_t = it * BT + tl.arange(0, BT)
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
def _write_input_grad(
    ptr,
    stride_t,
    offs_t,
    rm,
    dfp,
    dfn,
    fp,
    fn,
    x,
    w_ptr,
    dw,
    db,
    inv_temp,
    D,
    DP,
    F,
    MODE: tl.constexpr,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
):
    """Store (or add) the gradient of one tile's input; in Hedgehog modes also grow dW, db."""
    offs_p = tl.arange(0, BDP)
    if MODE == 0:
        mp = rm[:, None] & (offs_p[None, :] < DP)
        mn = rm[:, None] & (offs_p[None, :] < F - DP)
        pp = ptr + offs_t[:, None] * stride_t + offs_p[None, :]
        if ATOMIC:
            tl.atomic_add(pp, dfp, mask=mp)
            tl.atomic_add(pp + DP, dfn, mask=mn)
        else:
            tl.store(pp, dfp.to(ptr.dtype.element_ty), mask=mp)
            tl.store(pp + DP, dfn.to(ptr.dtype.element_ty), mask=mn)
    else:
        dz = _feature_backward(fp, fn, dfp, dfn, MODE) * inv_temp
        dz = tl.where(rm[:, None] & (offs_p[None, :] < DP), dz, 0.0)
        offs_d = tl.arange(0, BD)
        w = tl.load(
            w_ptr + offs_d[:, None] * DP + offs_p[None, :],
            mask=(offs_d[:, None] < D) & (offs_p[None, :] < DP),
            other=0.0,
        )
        # dz into PROJ range: rows scaled by their max for dx, columns by theirs for dW
        row = tl.max(tl.abs(dz), 1) + 1e-30
        col = tl.max(tl.abs(dz), 0) + 1e-30
        dx = tl.dot((dz / row[:, None]).to(PROJ), tl.trans(w)) * row[:, None]
        pd = ptr + offs_t[:, None] * stride_t + offs_d[None, :]
        md = rm[:, None] & (offs_d[None, :] < D)
        if ATOMIC:
            tl.atomic_add(pd, dx, mask=md)
        else:
            tl.store(pd, dx.to(ptr.dtype.element_ty), mask=md)
        dw += tl.dot(tl.trans(x), (dz / col[None, :]).to(PROJ)) * col[None, :]
        db += tl.sum(dz, 0)
    return dw, db


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
    s0_ptr,
    z0_ptr,
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
    NSEG,
    seg_len,
    s0_seg_stride,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_INIT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
):
    """dq (and dWq, dbq): a forward walk over the segment carrying S' = [S, z]."""
    iv, iseg, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
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
    first = (iv == 0).to(tl.float32)
    if HAS_INIT:
        base = ibh * (NSEG * s0_seg_stride + 1 - s0_seg_stride) + iseg * s0_seg_stride
        sp = tl.load(
            s0_ptr + (base * 2 * BDP + offs_p[:, None]) * DV + offs_v[None, :], mask=vm[None, :], other=0.0
        )
        sn = tl.load(
            s0_ptr + ((base * 2 + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :],
            mask=vm[None, :],
            other=0.0,
        )
        zp = tl.load(z0_ptr + base * 2 * BDP + offs_p)
        zn = tl.load(z0_ptr + (base * 2 + 1) * BDP + offs_p)
    else:
        sp = tl.zeros((BDP, BV), tl.float32)
        sn = tl.zeros((BDP, BV), tl.float32)
        zp = tl.zeros((BDP,), tl.float32)
        zn = tl.zeros((BDP,), tl.float32)
    dw = tl.zeros((BD, BDP), tl.float32)
    db = tl.zeros((BDP,), tl.float32)
    t0 = iseg * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    for start in range(t0, t1, BT):
        offs_t = start + tl.arange(0, BT)
        rm = offs_t < t1
        qp, qn, xq = _tile_features(q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, F, MODE, BD, BDP)
        g = tl.load(
            g_ptr + offs_t[:, None] * sgt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
        )
        rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
        delta = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0) * first
        g = (g.to(tl.float32) * rden[:, None]).to(DOT)
        dfp = tl.dot(g, tl.trans(sp.to(DOT))) + delta[:, None] * zp[None, :]
        dfn = tl.dot(g, tl.trans(sn.to(DOT))) + delta[:, None] * zn[None, :]
        if CAUSAL:
            kp, kn, _ = _tile_features(
                k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, F, MODE, BD, BDP
            )
            kw = rm.to(tl.float32)
            if HAS_MASK:
                kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
            kp = (kp * kw[:, None]).to(DOT)
            kn = (kn * kw[:, None]).to(DOT)
            v = tl.load(
                v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
            )
            v = v.to(DOT)
            p = tl.dot(g, tl.trans(v)) + delta[:, None]
            p = tl.where((offs_t[:, None] >= offs_t[None, :]) & rm[None, :], p, 0.0).to(DOT)
            dfp += tl.dot(p, kp)
            dfn += tl.dot(p, kn)
            sp += tl.dot(tl.trans(kp), v)
            sn += tl.dot(tl.trans(kn), v)
            zp += tl.sum(kp.to(tl.float32), 0)
            zn += tl.sum(kn.to(tl.float32), 0)
        dw, db = _write_input_grad(
            dq_ptr,
            sdt,
            offs_t,
            rm,
            dfp,
            dfn,
            qp,
            qn,
            xq,
            wq_ptr,
            dw,
            db,
            inv_temp,
            D,
            DP,
            F,
            MODE,
            ATOMIC,
            BD,
            BDP,
        )
    if MODE != 0:
        offs_d = tl.arange(0, BD)
        mw = (offs_d[:, None] < D) & (offs_p[None, :] < DP)
        tl.atomic_add(dw_ptr + ih * D * DP + offs_d[:, None] * DP + offs_p[None, :], dw, mask=mw)
        tl.atomic_add(db_ptr + ih * DP + offs_p, db, mask=offs_p < DP)


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
    r0_ptr,
    rz0_ptr,
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
    NSEG,
    seg_len,
    r0_seg_stride,
    inv_temp,
    D,
    DP,
    F,
    DV,
    MODE: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_INIT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ATOMIC: tl.constexpr,
    BD: tl.constexpr,
    BDP: tl.constexpr,
    BV: tl.constexpr,
):
    """dk, dv (and dWk, dbk): a reverse walk over the segment carrying R' = sum fq g'^T."""
    iv, iseg, ibh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
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
    first = (iv == 0).to(tl.float32)
    if HAS_INIT:
        base = ibh * (NSEG * r0_seg_stride + 1 - r0_seg_stride) + iseg * r0_seg_stride
        rp = tl.load(
            r0_ptr + (base * 2 * BDP + offs_p[:, None]) * DV + offs_v[None, :], mask=vm[None, :], other=0.0
        )
        rn = tl.load(
            r0_ptr + ((base * 2 + 1) * BDP + offs_p[:, None]) * DV + offs_v[None, :],
            mask=vm[None, :],
            other=0.0,
        )
        rzp = tl.load(rz0_ptr + base * 2 * BDP + offs_p) * first
        rzn = tl.load(rz0_ptr + (base * 2 + 1) * BDP + offs_p) * first
    else:
        rp = tl.zeros((BDP, BV), tl.float32)
        rn = tl.zeros((BDP, BV), tl.float32)
        rzp = tl.zeros((BDP,), tl.float32)
        rzn = tl.zeros((BDP,), tl.float32)
    dw = tl.zeros((BD, BDP), tl.float32)
    db = tl.zeros((BDP,), tl.float32)
    t0 = iseg * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    n_chunks = tl.cdiv(t1 - t0, BT)
    for c in range(n_chunks):
        offs_t = t0 + (n_chunks - 1 - c) * BT + tl.arange(0, BT)
        rm = offs_t < t1
        kp, kn, xk = _tile_features(k_ptr, skt, offs_t, rm, wk_ptr, bk_ptr, inv_temp, D, DP, F, MODE, BD, BDP)
        kw = rm.to(tl.float32)
        if HAS_MASK:
            kw = kw * tl.load(kmask_ptr + ib * smb + offs_t, mask=rm, other=0.0)
        kpe = (kp * kw[:, None]).to(DOT)
        kne = (kn * kw[:, None]).to(DOT)
        v = tl.load(
            v_ptr + offs_t[:, None] * svt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
        )
        v = v.to(DOT)
        dv = tl.dot(kpe, rp.to(DOT)) + tl.dot(kne, rn.to(DOT))
        dfp = tl.dot(v, tl.trans(rp.to(DOT))) + rzp[None, :]
        dfn = tl.dot(v, tl.trans(rn.to(DOT))) + rzn[None, :]
        if CAUSAL:
            qp, qn, _ = _tile_features(
                q_ptr, sqt, offs_t, rm, wq_ptr, bq_ptr, inv_temp, D, DP, F, MODE, BD, BDP
            )
            qp = tl.where(rm[:, None], qp, 0.0).to(DOT)
            qn = tl.where(rm[:, None], qn, 0.0).to(DOT)
            g = tl.load(
                g_ptr + offs_t[:, None] * sgt + offs_v[None, :], mask=rm[:, None] & vm[None, :], other=0.0
            )
            rden = tl.load(rden_ptr + ibh * T + offs_t, mask=rm, other=0.0)
            delta = tl.load(delta_ptr + ibh * T + offs_t, mask=rm, other=0.0) * first
            g = (g.to(tl.float32) * rden[:, None]).to(DOT)
            causal = offs_t[None, :] >= offs_t[:, None]
            at = tl.dot(kpe, tl.trans(qp)) + tl.dot(kne, tl.trans(qn))
            at = tl.where(causal, at, 0.0).to(DOT)
            dv += tl.dot(at, g)
            pt = tl.dot(v, tl.trans(g)) + delta[None, :]
            pt = tl.where(causal, pt, 0.0).to(DOT)
            dfp += tl.dot(pt, qp)
            dfn += tl.dot(pt, qn)
            rp += tl.dot(tl.trans(qp), g)
            rn += tl.dot(tl.trans(qn), g)
            rzp += tl.sum(qp.to(tl.float32) * delta[:, None], 0)
            rzn += tl.sum(qn.to(tl.float32) * delta[:, None], 0)
        tl.store(
            dv_ptr + offs_t[:, None] * svvt + offs_v[None, :],
            dv.to(dv_ptr.dtype.element_ty),
            mask=rm[:, None] & vm[None, :],
        )
        dfp = dfp * kw[:, None]
        dfn = dfn * kw[:, None]
        dw, db = _write_input_grad(
            dk_ptr,
            sdt,
            offs_t,
            rm,
            dfp,
            dfn,
            kp,
            kn,
            xk,
            wk_ptr,
            dw,
            db,
            inv_temp,
            D,
            DP,
            F,
            MODE,
            ATOMIC,
            BD,
            BDP,
        )
    if MODE != 0:
        offs_d = tl.arange(0, BD)
        mw = (offs_d[:, None] < D) & (offs_p[None, :] < DP)
        tl.atomic_add(dw_ptr + ih * D * DP + offs_d[:, None] * DP + offs_p[None, :], dw, mask=mw)
        tl.atomic_add(db_ptr + ih * DP + offs_p, db, mask=offs_p < DP)


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
        qp, qn = _activate(zq[None, :], offs_p < DP, MODE)
        kp, kn = _activate(zk[None, :], offs_p < DP, MODE)
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
