"""Triton kernels against the float64 reference of the attention library.

GPU tests (marker gpu) run the compiled kernels on bf16/fp16 inputs at real sizes and hold
outputs and every gradient to 1e-2 relative error. Without a GPU the same kernels run
under Triton's CPU interpreter (TRITON_INTERPRET=1, set by conftest.py before any import of triton)
on tiny shapes; there the attention products run in fp32, so the logic (masking of tails,
segments, states, the backward recurrences) is held to fp32 tolerances.
"""

import copy
from functools import partial

import pytest
import torch

pytest.importorskip("triton")  # without a GPU, conftest.py has set TRITON_INTERPRET=1

from hedgehog import kernels
from hedgehog.attention import (
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    LinearAttentionState,
    PerformerFeatureMap,
    SlidingWindowLinearAttention,
    chunked_linear_attention,
    noncausal_linear_attention,
    quadratic_linear_attention,
    recurrent_linear_attention,
)

interpreter = pytest.mark.skipif(
    torch.cuda.is_available(), reason="interpreter logic test; the gpu tests cover the compiled kernels"
)
EPS = 1e-6


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def hedgehog_map(h: int, d: int, activation: str, device="cpu", scale: float = 0.3) -> HedgehogFeatureMap:
    """A Hedgehog map moved off its identity start, so W and b matter."""
    fmap = HedgehogFeatureMap(h, d, activation=activation).to(device)
    with torch.no_grad():
        for p in fmap.parameters():
            p.add_(scale * torch.randn_like(p))
    return fmap


def reference(q, k, v, fmap, causal, mask=None, grad_out=None):
    """Output and grads (q, k, v, Wq, bq, Wk, bk) in float64 through the PyTorch library."""
    fm64 = copy.deepcopy(fmap).double()
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    fq, fk = fm64(q, k)
    if mask is not None:
        fk = fk * mask.double()[:, None, :, None]
    if causal:
        out = quadratic_linear_attention(fq, fk, v, causal=True, eps=EPS)
    else:
        out = noncausal_linear_attention(fq, fk, v, eps=EPS)
    params = (fm64.weight_q, fm64.bias_q, fm64.weight_k, fm64.bias_k)
    grads = torch.autograd.grad(out, (q, k, v, *params), grad_out.double())
    return out, grads


def fused(q, k, v, fmap, causal, mask=None, grad_out=None, segment_len=None):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    out, state = kernels.hedgehog_attention(
        q, k, v, *params, activation=fmap.activation, causal=causal, eps=EPS,
        key_padding_mask=mask, segment_len=segment_len,
    )  # fmt: skip
    grads = torch.autograd.grad(out, (q, k, v, *params), grad_out)
    return out, grads, state


NAMES = ("out", "dq", "dk", "dv", "dWq", "dbq", "dWk", "dbk")


def check_against_reference(b, h, t, d, dtype, activation, causal, tol, device, mask=None, segment_len=None):
    fmap = hedgehog_map(h, d, activation, device)
    q, k, v = (torch.randn(b, h, t, d, device=device).to(dtype) for _ in range(3))
    grad_out = torch.randn(b, h, t, d, device=device).to(dtype)
    if device == "cuda":
        poison_allocator()
    out, grads, state = fused(q, k, v, fmap, causal, mask, grad_out, segment_len)
    ref, ref_grads = reference(q, k, v, fmap, causal, mask, grad_out)
    values = [rel(out, ref)] + [rel(g, r) for g, r in zip(grads, ref_grads, strict=True)]
    errors = dict(zip(NAMES, values, strict=True))
    for name, x in zip(NAMES, (out, *grads), strict=True):
        assert torch.isfinite(x).all(), f"{name} has non-finite entries (unwritten or overflowed)"
    bad = {n: e for n, e in errors.items() if not e <= tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"
    return errors, state, (q, k, v, fmap)


def poison_allocator(gib: float = 2.0) -> None:
    """Fill memory the CUDA caching allocator will hand out next with NaN."""
    x = torch.full((int(gib * 2**28),), float("nan"), device="cuda")
    del x


# ---------------------------------------------------------------- CPU (interpreter)


@interpreter
@pytest.mark.parametrize("activation", ["softmax", "exp"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("t", "segment_len"), [(100, None), (100, 64), (300, 128)])
def test_fused_logic_fp32(activation, causal, t, segment_len):
    # 100 tokens: one full chunk and a masked tail; segment_len=64 splits them in two;
    # 300 tokens in segments of 128: chunk states written at several places of a segment,
    # three segments joined by the prefix over segments, and groups of two chunks in dq, dk/dv
    _, state, (q, k, v, fmap) = check_against_reference(
        2, 2, t, 16, torch.float32, activation, causal, 1e-4, "cpu", segment_len=segment_len
    )
    if causal:
        _, fk = copy.deepcopy(fmap).double()(q.double(), k.double())
        assert rel(state[0], fk.transpose(-1, -2) @ v.double()) < 1e-5
        assert rel(state[1], fk.sum(-2)) < 1e-5


@interpreter
@pytest.mark.parametrize("causal", [True, False])
def test_fused_logic_fp32_chunks_of_32(causal):
    # the wide shapes (head dim or feature half > 64) run chunks of 32 tokens: same function
    with kernels.launch_overrides(chunk={"BT": 32}):
        check_against_reference(1, 2, 150, 16, torch.float32, "softmax", causal, 1e-4, "cpu", segment_len=64)


def test_launch_overrides_hold_inside_their_block_nest_and_restore():
    from hedgehog.kernels import ops

    q, v, weight_q = torch.zeros(1, 1, 8, 64), torch.zeros(1, 1, 8, 64), torch.zeros(1, 64, 64)
    tuned = ops._dims(1, q, v, weight_q)
    assert tuned.BT == 64 and ops._launch("dq", tuned) == ops.TUNED["narrow"]["dq"]
    with kernels.launch_overrides(chunk={"BT": 32}, dq={"num_warps": 8}):
        dims = ops._dims(1, q, v, weight_q)
        assert dims.BT == 32 and ops._launch("dq", dims) == {"num_warps": 8, "num_stages": 2}
        with kernels.launch_overrides(dq={"num_stages": 1}):
            assert ops._launch("dq", dims) == {"num_warps": 8, "num_stages": 1}
        assert ops._launch("dq", dims) == {"num_warps": 8, "num_stages": 2}
    with pytest.raises(RuntimeError, match="inside"), kernels.launch_overrides(split={"walk": 1}):
        raise RuntimeError("inside")
    assert ops._dims(1, q, v, weight_q) == tuned and ops._launch("dq", tuned) == ops.TUNED["narrow"]["dq"]
    assert ops._LAUNCH == {}
    with (
        pytest.raises(ValueError, match="unknown kind 'dkv_kernel'"),
        kernels.launch_overrides(dkv_kernel={}),
    ):
        pass
    with pytest.raises(ValueError, match="num_warps"), kernels.launch_overrides(dq={"warps": 4}):
        pass


def test_segment_count_on_an_h200(monkeypatch):
    """The state walk's automatic split for 132 multiprocessors: 2 walk programs fit on each at
    head dim 64, 1 at 128; segments only where the waves they fill outweigh the carry kernel."""
    from types import SimpleNamespace

    from hedgehog.kernels import ops

    monkeypatch.setattr(ops, "_sm_count", lambda device: 132)
    cpu, auto = torch.device("cpu"), SimpleNamespace(segment_len=None)

    def split(t, bh, wide=False, carried=True):
        dims = SimpleNamespace(NV=1, BT=32 if wide else 64, wide=wide)
        return ops._segments(t, bh, dims, auto, cpu, carried)

    # GPT-2 shape (H = 12, 131,072 tokens): 1k-16k walk whole; at 32k, 96 programs on 264 slots
    # would walk 512 chunks each: 11 segments are four whole waves of 47 chunks
    assert split(1024, 128 * 12) == (1024, 1)
    assert split(16384, 8 * 12) == (16384, 1)
    assert split(32768, 4 * 12) == (47 * 64, 11)
    assert split(131072, 12) == (187 * 64, 11)
    # Llama-2 shape (H = 32, 65,536 tokens): 128 programs at 32k already fill the 132 slots
    assert split(32768, 2 * 32, wide=True) == (32768, 1)
    assert split(65536, 32, wide=True) == (1024 * 32, 2)  # 64 programs: two segments fill the slots
    # without stored states to rewrite (non-causal totals) splitting is free: more segments
    assert split(16384, 8 * 12, carried=False)[1] > 1


@interpreter
def test_automatic_segments_logic(monkeypatch):
    """The automatic split (no segment_len) in the interpreter: 8 stand-in multiprocessors for one
    (batch x head) make 8 segments of 2 chunks; outputs and gradients as in float64."""
    from types import SimpleNamespace

    from hedgehog.kernels import ops

    monkeypatch.setattr(ops, "_sm_count", lambda device: 8)
    dims = SimpleNamespace(NV=1, BT=64, wide=False)
    assert ops._segments(1000, 1, dims, SimpleNamespace(segment_len=None), torch.device("cpu")) == (128, 8)
    check_against_reference(1, 1, 1000, 16, torch.float32, "softmax", True, 1e-4, "cpu")


@interpreter
@pytest.mark.parametrize("causal", [True, False])
def test_fused_two_value_blocks(causal):
    # head dim 128: two blocks of 64 value columns, dq and dk summed across them with atomics
    check_against_reference(1, 1, 70, 128, torch.float32, "softmax", causal, 1e-4, "cpu")


@interpreter
@pytest.mark.parametrize("causal", [True, False])
def test_fused_key_padding_mask(causal):
    mask = torch.ones(2, 80)
    mask[0, 50:] = 0
    mask[1, :7] = 0
    check_against_reference(2, 2, 80, 16, torch.float32, "softmax", causal, 1e-4, "cpu", mask=mask)


@interpreter
def test_fused_bf16_within_bf16_tolerance():
    check_against_reference(1, 2, 130, 32, torch.bfloat16, "softmax", True, 1e-2, "cpu", segment_len=64)


@interpreter
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("f", [16, 10])  # 10: two feature halves of 5, padded to 16
def test_generic_features_logic(causal, f):
    fq, fk = (torch.rand(2, 2, 90, f) + 0.05 for _ in range(2))
    v = torch.randn(2, 2, 90, 16)
    grad_out = torch.randn_like(v)
    ins = [x.clone().requires_grad_() for x in (fq, fk, v)]
    out, _ = kernels.linear_attention(*ins, causal=causal, eps=EPS, segment_len=64)
    grads = torch.autograd.grad(out, ins, grad_out)
    refs = [x.double().requires_grad_() for x in (fq, fk, v)]
    if causal:
        ref = quadratic_linear_attention(*refs, causal=True, eps=EPS)
    else:
        ref = noncausal_linear_attention(*refs, eps=EPS)
    ref_grads = torch.autograd.grad(ref, refs, grad_out.double())
    assert rel(out, ref) < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert rel(g, r) < 1e-5


@interpreter
def test_carried_state_prefill_then_decode_continues_the_sequence():
    fmap = hedgehog_map(2, 16, "softmax")
    q, k, v = (torch.randn(1, 2, 150, 16) for _ in range(3))
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    with torch.no_grad():
        full, full_state = kernels.hedgehog_attention(q, k, v, *params)
        parts, state = [], None
        for start, end in ((0, 70), (70, 149)):
            out, state = kernels.hedgehog_attention(
                q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], *params, state=state
            )
            parts.append(out)
        step, state = kernels.hedgehog_decode(
            q[:, :, 149:], k[:, :, 149:], v[:, :, 149:], *params, state=state
        )
    assert rel(torch.cat([*parts, step], dim=-2), full) < 1e-5
    assert rel(state[0], full_state[0]) < 1e-5 and rel(state[1], full_state[1]) < 1e-5


@interpreter
def test_gradients_with_a_carried_state_across_segments():
    """A carried state (a constant) plus several segments: the carry kernel adds both to the stored
    states of the forward and of the backward's recomputation; gradients as in float64."""
    torch.manual_seed(0)
    fmap = hedgehog_map(2, 16, "softmax")
    fm64 = copy.deepcopy(fmap).double()
    q, k, v = (torch.randn(1, 2, 200, 16, dtype=torch.float64) for _ in range(3))
    grad_out = torch.randn(1, 2, 130, 16, dtype=torch.float64)
    with torch.no_grad():  # the state after a 70-token prefix
        _, fk0 = fm64(q[:, :, :70], k[:, :, :70])
        state = LinearAttentionState(fk0.transpose(-1, -2) @ v[:, :, :70], fk0.sum(-2), 70)
    xs = [x[:, :, 70:].clone().requires_grad_() for x in (q, k, v)]
    fq, fk = fm64(xs[0], xs[1])
    ref = chunked_linear_attention(fq, fk, xs[2], 64, EPS, state)[0]
    params64 = (fm64.weight_q, fm64.bias_q, fm64.weight_k, fm64.bias_k)
    ref_grads = torch.autograd.grad(ref, (*xs, *params64), grad_out)
    ins = [x.detach().float().requires_grad_() for x in xs]
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    out, _ = kernels.hedgehog_attention(
        *ins, *params, eps=EPS, state=(state.kv.float(), state.k_sum.float()), segment_len=64
    )
    grads = torch.autograd.grad(out, (*ins, *params), grad_out.float())
    assert rel(out, ref) < 1e-4
    for name, g, r in zip(NAMES[1:], grads, ref_grads, strict=True):
        assert rel(g, r) < 1e-4, name


@pytest.mark.parametrize(("f", "padded"), [(128, False), (12, True), (11, True)])
def test_state_layout_round_trip_and_no_copy_when_unpadded(f, padded):
    """The carried state in the kernels' layout (two feature halves in blocks): a view of the
    caller's state when the halves fill the blocks (no copies per decoded token), else padded."""
    from hedgehog.kernels import ops

    kv, k_sum = torch.randn(2, 3, f, 16), torch.rand(2, 3, f)
    q, v = torch.randn(2, 3, 1, f), torch.randn(2, 3, 1, 16)
    dims = ops._dims(0, q, v, None)
    s, z = ops._pad_state(kv, k_sum, dims)
    assert s.shape == (6, 2, dims.BDP, 16) and z.shape == (6, 2, dims.BDP)
    assert (s.data_ptr() == kv.data_ptr() and z.data_ptr() == k_sum.data_ptr()) != padded
    if padded:
        assert s[:, 1, f - dims.DP :].abs().sum() == 0 and z[:, 0, dims.DP :].abs().sum() == 0
    kv1, k_sum1 = ops._unpad_state(s, z, 2, 3, dims)
    assert torch.equal(kv1, kv) and torch.equal(k_sum1, k_sum)


@interpreter
def test_decode_matches_recurrent_form():
    fq, fk = (torch.rand(2, 3, 1, 12) + 0.05 for _ in range(2))
    v = torch.randn(2, 3, 1, 16)
    kv, k_sum = torch.rand(2, 3, 12, 16), torch.rand(2, 3, 12) + 1.0
    out, (kv1, ks1) = kernels.linear_attention_decode(fq, fk, v, (kv, k_sum), EPS)
    ref, ref_state = recurrent_linear_attention(fq, fk, v, EPS, LinearAttentionState(kv, k_sum, 5))
    assert rel(out, ref) < 1e-5
    assert rel(kv1, ref_state.kv) < 1e-6 and rel(ks1, ref_state.k_sum) < 1e-6


def map_against_float64(b, h, t, d, dp, activation, temperature, dtype, device):
    """hedgehog_features against HedgehogFeatureMap in float64: the relative errors of the features and
    of the gradients of x, W and b (several groups of tiles per (batch, head) at t > 64)."""
    torch.manual_seed(0)
    fmap = HedgehogFeatureMap(h, d, dp, activation=activation, temperature=temperature).double()
    with torch.no_grad():
        for p in fmap.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True)
    ref = fmap._f(fmap._project(x, fmap.weight_q, fmap.bias_q))
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, fmap.weight_q, fmap.bias_q), grad)
    inputs = [
        a.detach().to(device, dtype if a is x else torch.float32).requires_grad_()
        for a in (x, fmap.weight_q, fmap.bias_q)
    ]
    out = kernels.hedgehog_features(*inputs, activation, temperature)
    assert out.shape == ref.shape and out.dtype == dtype
    grads = torch.autograd.grad(out, inputs, grad.to(device, dtype))
    return [rel(a.cpu(), r) for a, r in zip((out, *grads), (ref, *ref_grads), strict=True)]


@interpreter
@pytest.mark.parametrize("activation", ["softmax", "exp"])
@pytest.mark.parametrize(("d", "dp", "temperature"), [(16, 16, 1.0), (12, 10, 0.7)])
def test_feature_map_kernel_logic_fp32(activation, d, dp, temperature):
    """The map kernels (features written once; their backward with dW, db summed over programs) give
    HedgehogFeatureMap's features and gradients, also at sizes that pad the head and feature blocks."""
    errors = map_against_float64(2, 3, 150, d, dp, activation, temperature, torch.float32, "cpu")
    assert max(errors) < 1e-5, errors


def test_feature_map_kernel_refuses_mismatched_shapes():
    x, w, b = torch.randn(1, 2, 8, 16), torch.randn(2, 8, 16), torch.randn(2, 16)
    with pytest.raises(ValueError, match=r"\(heads, dim, features/2\)"):
        kernels.hedgehog_features(x, w, b)
    with pytest.raises(ValueError, match="activation"):
        kernels.hedgehog_features(x, torch.randn(2, 16, 16), b, activation="relu")


def window_against_float64(b, h, t, d, dv, dtype, device, tied=False, mask=None):
    """kernels.window_attention against the quadratic hybrid form in float64: the relative errors of the
    output, of the gradients of q, k, v, fq, fk and gamma (absolute where the reference is 0: with
    t <= 64 every key is in the window and the linear part has no gradient) and of the returned linear
    state of all keys (kv, k_sum).

    The reference takes the inputs as rounded to the kernel's dtype: the window's shift m_i = max_j s_ij
    is part of the function, so its gradient goes to the row's argmax key, and where two scores nearly tie
    bf16 rounding of q and k alone moves the argmax (the exact function's dq and dk change by about 4% in
    norm from that rounding at these sizes): a kink of the function, not an error of the kernel."""
    from hedgehog.attention.window import quadratic_window_attention

    torch.manual_seed(0)
    fmap = hedgehog_map(h, d, "softmax")
    q, k = (2 * torch.randn(b, h, t, d) for _ in range(2))
    if tied:  # keys in equal pairs: a row's max is often taken twice, exactly
        k[:, :, 1::2] = k[:, :, 0::2][:, :, : t // 2]
    v = torch.randn(b, h, t, dv)
    with torch.no_grad():
        fq, fk = fmap(q, k)
    gamma = torch.rand(h) * 0.9 + 0.05
    q, k, v, fq, fk = (x.to(dtype) for x in (q, k, v, fq, fk))
    refs = [x.double().requires_grad_() for x in (q, k, v, fq, fk, gamma)]
    ref = quadratic_window_attention(*refs[:5], 64, refs[5], key_padding_mask=mask)
    grad = torch.randn_like(ref).to(dtype).double()
    ref_grads = torch.autograd.grad(ref, refs, grad)
    inputs = [
        x.to(device, dtype if x is not gamma else torch.float32).requires_grad_()
        for x in (q, k, v, fq, fk, gamma)
    ]
    out, state = kernels.window_attention(*inputs, key_padding_mask=None if mask is None else mask.to(device))
    assert out.dtype == dtype and out.shape == v.shape
    grads = torch.autograd.grad(out, inputs, grad.to(device, dtype))
    kept = refs[4].detach() * (1.0 if mask is None else mask[:, None, :, None].double())
    ref_state = (kept.transpose(-1, -2) @ refs[2].detach(), kept.sum(-2))  # the linear state of all keys
    return [
        rel(x.cpu(), r) if r.norm() > 0 else x.abs().max().item()
        for x, r in zip((out, *grads, *state), (ref, *ref_grads, *ref_state), strict=True)
    ]


@interpreter
@pytest.mark.parametrize(
    ("t", "d", "dv"), [(150, 16, 16), (64, 16, 24), (200, 12, 16), (40, 16, 16), (130, 16, 160)]
)
def test_window_kernel_logic_fp32(t, d, dv):
    """The hybrid's kernels (window of one chunk; the linear part through the stored states and the early
    part of the previous chunk; its backward as causal linear attention on keys one window later, plus the
    window's softmax gradient through the row max) give the quadratic form's output and every gradient:
    tails, padded blocks, sequences within one window and two value blocks included."""
    errors = window_against_float64(2, 3, t, d, dv, torch.float32, "cpu")
    assert max(errors) < 1e-5, errors


@interpreter
def test_window_kernel_splits_the_max_among_tied_keys():
    """Where a row's max is taken by two equal keys, its share of the gradient is split between them, as
    the reference's amax does: in dq (per query chunk) and in dk (per key chunk, the scores recomputed)."""
    errors = window_against_float64(2, 3, 150, 16, 16, torch.float32, "cpu", tied=True)
    assert max(errors) < 1e-5, errors


def window_layer_against_float64(
    device: str, b: int, h: int, t: int, d: int, padded: bool = False, dtype: torch.dtype = torch.bfloat16
) -> list[float]:
    """SlidingWindowLinearAttention's kernel path in half precision (on CUDA through ``forward``; on the CPU,
    under the interpreter, through ``_kernel_forward``, which forward takes for CUDA half tensors) against the
    layer in float64: relative errors of the output, of the gradients of q, k, v and of the parameters (map,
    window factors), and of the next token decoded from the state it hands on. ``padded``: a key padding
    mask with the batch's first row right-padded (as SAMSum's training batches are), the last left-padded
    by 70 keys (so its first rows see no key) and holes mid-sequence in the others."""
    torch.manual_seed(0)
    mask = None
    if padded:
        mask = torch.ones(b, t, dtype=torch.bool)
        mask[0, t - 40 :] = False
        mask[-1, :70] = False
        mask[1:-1, 5::7] = False
    layer = SlidingWindowLinearAttention(h, d, HedgehogFeatureMap, window_factor=0.3)
    with torch.no_grad():
        for p in layer.feature_map.parameters():
            p.add_(0.3 * torch.randn_like(p))
    q, k, v, grad_out = (torch.randn(b, h, t, d).to(dtype) for _ in range(4))
    ref_layer = copy.deepcopy(layer).double()
    ins = [x.double().requires_grad_() for x in (q, k, v)]
    ref, ref_state = ref_layer(*ins, key_padding_mask=mask)
    ref_grads = torch.autograd.grad(ref, [*ins, *ref_layer.parameters()], grad_out.double())
    layer = layer.to(device)
    ins = [x.to(device).requires_grad_() for x in (q, k, v)]
    dev_mask = mask.to(device) if mask is not None else None
    with torch.autocast(device, dtype=dtype):
        if device == "cpu":
            out, state = layer._kernel_forward(*ins, *layer.features(*ins[:2]), dev_mask)
        else:
            out, state = layer(*ins, key_padding_mask=dev_mask)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, [*ins, *layer.parameters()], grad_out.to(device))
    nxt = [torch.randn(b, h, 1, d).to(dtype) for _ in range(3)]
    with torch.autocast(device, dtype=dtype):
        step, _ = layer(*(x.to(device) for x in nxt), cache=state)
    ref_step, _ = ref_layer(*(x.double() for x in nxt), cache=ref_state)
    pairs = zip((out, *grads, step), (ref, *ref_grads, ref_step), strict=True)
    return [rel(x.float().cpu(), r) for x, r in pairs]


# output, dq, dk, dv, the five parameters' gradients, the next token. The map runs under autocast, so its
# features are rounded to bf16 before the kernels and every gradient carries that rounding too (the map's up
# to 0.9% at head dim 16 under the interpreter): twice the bound for the gradients
WINDOW_LAYER_BOUNDS = [1e-2] + [2e-2] * 8 + [1e-2]


@interpreter
@pytest.mark.parametrize("padded", [False, True])
def test_window_layer_kernel_path_logic(padded):
    errors = window_layer_against_float64("cpu", 3 if padded else 1, 2, 150, 16, padded)
    assert all(e < bound for e, bound in zip(errors, WINDOW_LAYER_BOUNDS, strict=True)), errors


@interpreter
@pytest.mark.parametrize("t", [150, 60])
def test_window_kernel_leaves_out_masked_keys(t):
    """A key padding mask: left padding (70 keys, so early rows have no key at all) and right padding
    (40 keys) in one batch, and holes mid-sequence: masked keys leave both the window (its max included)
    and the linear part, as in the quadratic form."""
    mask = torch.ones(3, t, dtype=torch.bool)
    mask[0, :70] = False
    mask[1, t - 40 :] = False
    mask[2, 5::7] = False
    errors = window_against_float64(3, 2, t, 16, 16, torch.float32, "cpu", mask=mask)
    assert max(errors) < 1e-5, errors


def test_window_kernel_refuses_what_it_does_not_take():
    q = k = v = torch.randn(1, 2, 70, 16)
    f = torch.rand(1, 2, 70, 16)
    gamma = torch.full((2,), 0.5)
    with pytest.raises(ValueError, match="window of 64"):
        kernels.window_attention(q, k, v, f, f, gamma, window=32)
    with pytest.raises(ValueError, match="one factor per head"):
        kernels.window_attention(q, k, v, f, f, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="matching q"):
        kernels.window_attention(q, k, v, f[:, :, :60], f[:, :, :60], gamma)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(batch, tokens\)"):
        kernels.window_attention(q, k, v, f, f, gamma, key_padding_mask=torch.ones(1, 60))


# ---------------------------------------------------------------- GPU (compiled)

GPU_TOL = 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("t", [1000, 1024])
def test_gpu_fused_causal_softmax(dtype, d, t):
    check_against_reference(2, 4, t, d, dtype, "softmax", True, GPU_TOL, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_fused_long_sequence_segments(d):
    # one sequence, two heads: the sequence is cut into many segments (state pass + prefix)
    check_against_reference(1, 2, 4000, d, torch.bfloat16, "softmax", True, GPU_TOL, "cuda")


@pytest.mark.gpu
def test_gpu_fused_exp_form():
    check_against_reference(2, 4, 1000, 64, torch.bfloat16, "exp", True, GPU_TOL, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_fused_noncausal_with_padding(d):
    mask = torch.ones(2, 1000, device="cuda")
    mask[0, 700:] = 0
    check_against_reference(2, 4, 1000, d, torch.bfloat16, "softmax", False, GPU_TOL, "cuda", mask=mask)


@pytest.mark.gpu
def test_gpu_stored_states_beyond_int32_offsets():
    """Llama-2's shape at 32k tokens stores 2^31 state elements and more: the second sequence of
    the batch must match the same sequence run alone (whose offsets stay small)."""
    torch.manual_seed(0)
    h, t, d = 32, 32768, 128
    fmap = hedgehog_map(h, d, "softmax", "cuda")
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    q, k, v = (torch.randn(2, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    batch, _ = kernels.hedgehog_attention(q, k, v, *params)
    alone, _ = kernels.hedgehog_attention(q[1:], k[1:], v[1:], *params)
    assert torch.isfinite(batch).all()
    assert rel(batch[1], alone[0]) < GPU_TOL  # segment splits differ, so not bit-equal


@pytest.mark.gpu
@pytest.mark.parametrize("f", [64, 96, 256])
@pytest.mark.parametrize("t", [777, 4000])
def test_gpu_generic_features(f, t):
    """Features computed outside (the baselines) through the chunked kernels: F = 64 has feature
    halves of 32, which the kernels pad to blocks of 64 (32-wide blocks miscompiled on the H200)."""
    torch.manual_seed(0)
    fq, fk = (torch.nn.functional.elu(torch.randn(2, 4, t, f, device="cuda")) + 1 for _ in range(2))
    v, g = torch.randn(2, 2, 4, t, 64, device="cuda").unbind(0)
    ins = [x.to(torch.bfloat16).requires_grad_() for x in (fq, fk, v)]
    out, (kv, _) = kernels.linear_attention(*ins)
    grads = torch.autograd.grad(out, ins, g.to(torch.bfloat16))
    refs = [x.detach().double().requires_grad_() for x in ins]
    ref = quadratic_linear_attention(*refs, causal=True, eps=EPS)
    ref_grads = torch.autograd.grad(ref, refs, g.double())
    assert rel(out, ref) < GPU_TOL
    for a, r in zip(grads, ref_grads, strict=True):
        assert rel(a, r) < GPU_TOL
    assert rel(kv, refs[1].transpose(-1, -2) @ refs[2]) < GPU_TOL


def _spy_on_kernel_paths(monkeypatch) -> list[str]:
    """Record which kernel entry points a layer calls, in order."""
    calls = []
    for name in ("hedgehog_attention", "hedgehog_features", "linear_attention", "hedgehog_decode"):
        original = getattr(kernels, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, spy)
    return calls


def hedgehog_layer_paths(monkeypatch, device: str, d: int, t: int) -> tuple[list[str], list[float]]:
    """A causal Hedgehog LinearAttention at head dim d in bf16 (through ``forward`` on CUDA; on the CPU,
    under the interpreter, through ``_kernel_forward``, which forward takes for CUDA half tensors): the
    kernel entry points it called and its relative errors against the layer in float64 (output, the
    gradients of q, k, v and of the map's parameters, the state's kv)."""
    torch.manual_seed(0)
    layer = LinearAttention(2, d, HedgehogFeatureMap)
    with torch.no_grad():
        for p in layer.feature_map.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q, k, v, grad_out = (torch.randn(2, 2, t, d).to(torch.bfloat16) for _ in range(4))
    ref_layer = copy.deepcopy(layer).double()
    refs = [x.double().requires_grad_() for x in (q, k, v)]
    ref, ref_state = ref_layer(*refs)
    ref_grads = torch.autograd.grad(ref, [*refs, *ref_layer.parameters()], grad_out.double())
    layer = layer.to(device)
    ins = [x.to(device).requires_grad_() for x in (q, k, v)]
    calls = _spy_on_kernel_paths(monkeypatch)
    out, state = layer(*ins) if device == "cuda" else layer._kernel_forward(*ins, None, None)
    grads = torch.autograd.grad(out, [*ins, *layer.parameters()], grad_out.to(device))
    pairs = zip((out, *grads, state.kv), (ref, *ref_grads, ref_state.kv), strict=True)
    return calls, [rel(x.float().cpu(), r) for x, r in pairs]


@interpreter
@pytest.mark.parametrize(("d", "path"), [(16, ["hedgehog_attention"]), (72, ["linear_attention"])])
def test_causal_hedgehog_layer_writes_features_above_head_dim_64(monkeypatch, d, path):
    """Causal Hedgehog layers run fused up to head dim 64 and, above it (Llama-family), write their features
    once for the generic chunked kernels (on the CPU the map itself runs in PyTorch; on CUDA the map kernels
    write them); the same function either way."""
    calls, errors = hedgehog_layer_paths(monkeypatch, "cpu", d, 150)
    assert calls == path
    assert max(errors) < 1e-2, errors


@pytest.mark.gpu
def test_gpu_causal_hedgehog_layer_at_head_dim_128_writes_features(monkeypatch):
    """At Llama's head dim 128 the causal Hedgehog layer on CUDA writes its features with the map kernels
    and runs the generic chunked kernels, matching float64 on the CPU."""
    calls, errors = hedgehog_layer_paths(monkeypatch, "cuda", 128, 777)
    assert calls == ["hedgehog_features", "hedgehog_features", "linear_attention"]
    assert max(errors) < GPU_TOL, errors


@pytest.mark.gpu
@pytest.mark.parametrize("fmap_cls", [Elu1FeatureMap, PerformerFeatureMap])
def test_gpu_layer_dispatch_generic_and_hedgehog(fmap_cls):
    """LinearAttention on CUDA half tensors takes the kernels (Hedgehog fused, baselines' features
    through the generic chunked and decode kernels); same function as float64 on CPU."""
    for cls in (fmap_cls, HedgehogFeatureMap):
        layer = LinearAttention(4, 64, cls).cuda()
        q, k, v = (torch.randn(2, 4, 777, 64, device="cuda").to(torch.bfloat16) for _ in range(3))
        grad_out = torch.randn(2, 4, 777, 64, device="cuda").to(torch.bfloat16)
        ins = [x.clone().requires_grad_() for x in (q, k, v)]
        out, state = layer(*ins)
        grads = torch.autograd.grad(out, [*ins, *layer.parameters()], grad_out)
        ref_layer = copy.deepcopy(layer).cpu().double()
        refs = [x.detach().cpu().double().requires_grad_() for x in (q, k, v)]
        ref, ref_state = ref_layer(*refs)
        ref_grads = torch.autograd.grad(ref, [*refs, *ref_layer.parameters()], grad_out.cpu().double())
        assert rel(out.cpu(), ref) < GPU_TOL
        for g, r in zip(grads, ref_grads, strict=True):
            assert rel(g.cpu(), r) < GPU_TOL
        assert rel(state.kv.cpu(), ref_state.kv) < GPU_TOL and state.offset == 777
        with torch.no_grad():
            _, cache = layer(q[:, :, :-1], k[:, :, :-1], v[:, :, :-1])
            step, _ = layer(q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], cache=cache)
        assert rel(step.cpu(), ref[:, :, -1:]) < GPU_TOL


def _spy_on_fused_kernel(monkeypatch) -> list[bool]:
    """Record the ``causal`` flag of every call of the fused Hedgehog kernel."""
    calls, fused = [], kernels.hedgehog_attention

    def spy(*args, **kwargs):
        calls.append(kwargs["causal"])
        return fused(*args, **kwargs)

    monkeypatch.setattr(kernels, "hedgehog_attention", spy)
    return calls


def noncausal_hedgehog_layer(h: int, d: int) -> LinearAttention:
    """A non-causal Hedgehog LinearAttention on CUDA, its map moved off the identity start."""
    layer = LinearAttention(h, d, HedgehogFeatureMap, causal=False).cuda()
    with torch.no_grad():
        for p in layer.feature_map.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.gpu
def test_gpu_noncausal_hedgehog_layer_matches_the_pytorch_form(monkeypatch):
    """The encoders' path (ViT, LRA): LinearAttention(causal=False) with the Hedgehog map on CUDA bf16 runs
    the fused non-causal kernel and computes what the PyTorch form computes in float64 on the CPU:
    the output and the gradients of q, k, v and of the map, with padded keys (ViT-B/16's shape: 12 heads
    of 64, 197 tokens)."""
    torch.manual_seed(0)
    calls = _spy_on_fused_kernel(monkeypatch)
    layer = noncausal_hedgehog_layer(12, 64)
    q, k, v, grad_out = (torch.randn(2, 12, 197, 64, device="cuda").to(torch.bfloat16) for _ in range(4))
    mask = torch.ones(2, 197, dtype=torch.bool, device="cuda")
    mask[1, 150:] = False
    ins = [x.clone().requires_grad_() for x in (q, k, v)]
    out, _ = layer(*ins, key_padding_mask=mask)
    assert calls == [False]
    grads = torch.autograd.grad(out, [*ins, *layer.parameters()], grad_out)
    ref_layer = copy.deepcopy(layer).cpu().double()
    refs = [x.detach().cpu().double().requires_grad_() for x in (q, k, v)]
    ref, _ = ref_layer(*refs, key_padding_mask=mask.cpu())
    ref_grads = torch.autograd.grad(ref, [*refs, *ref_layer.parameters()], grad_out.cpu().double())
    assert rel(out.cpu(), ref) < GPU_TOL
    for name, g, r in zip(NAMES[1:], grads, ref_grads, strict=True):
        assert rel(g.cpu(), r) < GPU_TOL, name


def test_compiled_kernels_take_only_validated_head_dims(monkeypatch):
    """Compiled (not interpreted), head or value dims below 32 are refused (LinearAttention then runs the
    PyTorch forms): 32, 64 and 128 are the dims the GPU tests check against float64 (kernels.ops.MIN_COMPILED_DIM)."""
    monkeypatch.setattr(kernels.ops.K, "INTERPRET", False)
    assert (
        kernels.supported(64, 128, 64) and kernels.supported(128, 256, 128) and kernels.supported(32, 64, 32)
    )
    assert not kernels.supported(16, 32, 16) and not kernels.supported(64, 128, 16)
    assert kernels.supported(None, 256, 64) and not kernels.supported(None, 64, 16)  # features given
    assert not kernels.supported(256, 128, 64)  # too wide for the registers, as before
    monkeypatch.setattr(kernels.ops.K, "INTERPRET", True)
    assert kernels.supported(16, 32, 16)  # the interpreter's logic tests run every size


@pytest.mark.gpu
def test_gpu_lra_heads_take_the_kernels_and_narrower_ones_the_pytorch_form(monkeypatch):
    """LRA's shape (4 heads of 32, 784 tokens, non-causal): the layer takes the fused kernel and matches
    float64. Heads of 16 (MQAR's 4 heads at width 64) leave the kernels out and still match; the kernel itself
    refuses that size with an error that says what it takes."""
    torch.manual_seed(0)
    calls = _spy_on_fused_kernel(monkeypatch)
    for head_dim, fused in ((32, True), (16, False)):
        calls.clear()
        layer = noncausal_hedgehog_layer(4, head_dim)
        q, k, v = (torch.randn(2, 4, 784, head_dim, device="cuda").to(torch.bfloat16) for _ in range(3))
        out, _ = layer(q, k, v)
        assert bool(calls) == fused, head_dim
        ref, _ = copy.deepcopy(layer).cpu().double()(*(x.cpu().double() for x in (q, k, v)))
        assert rel(out.cpu(), ref) < GPU_TOL, head_dim
    fmap = layer.feature_map
    with pytest.raises(ValueError, match=">= 32"):
        kernels.ops.hedgehog_attention(q, k, v, fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_gpu_head_dim_32_through_padded_blocks(causal):
    """Head dim 32 (LRA's 4 heads of 32) through the kernels, whose head-dim, feature and value blocks are
    padded to 64 on the GPU: the output and all gradients against float64 (with 32-wide blocks the forward
    was 28% off, experiments/lra/lab/kernel_eval_crash_h200.log)."""
    torch.manual_seed(0)
    check_against_reference(2, 4, 1000, 32, torch.bfloat16, "softmax", causal, GPU_TOL, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["softmax", "exp"])
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_feature_map_kernel(activation, d):
    """The map kernels compiled, bf16 x and features: features and every gradient against float64."""
    errors = map_against_float64(4, 3, 1000, d, d, activation, 1.0, torch.bfloat16, "cuda")
    assert max(errors) < GPU_TOL, errors


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_feature_map_and_window_kernels_in_float16(d):
    """The map and hybrid kernels in float16 against float64 (what lets the layers dispatch them for float16
    as well as bf16)."""
    errors = map_against_float64(4, 3, 1000, d, d, "softmax", 1.0, torch.float16, "cuda")
    assert max(errors) < GPU_TOL, errors
    errors = window_against_float64(2, 4, 1000, d, d, torch.float16, "cuda")
    assert max(errors) < GPU_TOL, errors


@pytest.mark.gpu
def test_gpu_hedgehog_feature_map_takes_the_map_kernels(monkeypatch):
    """HedgehogFeatureMap on CUDA bf16 tensors computes its features through the map kernels (what
    distillation and the hybrid layer read), with the same features and parameter gradients as its
    PyTorch form in float64 on the CPU."""
    calls, kernel = [], kernels.hedgehog_features
    monkeypatch.setattr(kernels, "hedgehog_features", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    torch.manual_seed(0)
    fmap = hedgehog_map(4, 64, "softmax")
    q, k = (torch.randn(2, 4, 300, 64).to(torch.bfloat16) for _ in range(2))
    ref_map = copy.deepcopy(fmap).double()
    ref = torch.cat(ref_map(q.double(), k.double()), -1)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, list(ref_map.parameters()), grad)
    fmap = fmap.cuda()
    out = torch.cat(fmap(q.cuda(), k.cuda()), -1)
    assert len(calls) == 2 and out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out, list(fmap.parameters()), grad.cuda().to(out.dtype))
    assert rel(out.cpu(), ref) < GPU_TOL
    for g, r in zip(grads, ref_grads, strict=True):
        assert rel(g.cpu(), r) < GPU_TOL


@pytest.mark.gpu
@pytest.mark.parametrize(("d", "t"), [(64, 1000), (128, 777)])
def test_gpu_window_kernel(d, t):
    """The hybrid's kernels compiled, bf16, Hedgehog features of head dims 64 and 128: output and every
    gradient against float64."""
    errors = window_against_float64(2, 4, t, d, d, torch.bfloat16, "cuda")
    assert max(errors) < GPU_TOL, errors


@pytest.mark.gpu
def test_gpu_window_kernel_with_key_mask():
    """The hybrid's kernels compiled, bf16, with left, right and scattered key padding (as the interpreter
    test): output and every gradient against float64."""
    mask = torch.ones(3, 1000, dtype=torch.bool)
    mask[0, :70] = False
    mask[1, 960:] = False
    mask[2, 5::7] = False
    errors = window_against_float64(3, 4, 1000, 64, 64, torch.bfloat16, "cuda", mask=mask)
    assert max(errors) < GPU_TOL, errors


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("padded", "dtype"), [(False, torch.bfloat16), (True, torch.bfloat16), (True, torch.float16)]
)
def test_gpu_window_layer_takes_the_kernel(monkeypatch, padded, dtype):
    """SlidingWindowLinearAttention on CUDA in half precision, with or without a key padding mask, runs the
    hybrid's kernels and matches the layer in float64 on the CPU (``window_layer_against_float64``: output,
    gradients, the next decoded token)."""
    calls, kernel = [], kernels.window_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(kernels, "window_attention", spy)
    b = 3 if padded else 2
    errors = window_layer_against_float64("cuda", b, 4, 300, 64, padded, dtype)
    assert calls == [(b, 4, 300, 64)]
    assert all(e < bound for e, bound in zip(errors, WINDOW_LAYER_BOUNDS, strict=True)), errors


@pytest.mark.gpu
def test_gpu_converted_vit_matches_its_float64_cpu_form(monkeypatch):
    """A ViT-B/16-shaped classifier (2 layers) converted to Hedgehog: under bf16 autocast on the GPU every
    layer takes the fused non-causal kernel, and the logits agree with the same model in float64 on the CPU."""
    from transformers import ViTConfig, ViTForImageClassification

    from hedgehog.models.conversion import convert, feature_map_parameters

    torch.manual_seed(0)
    config = ViTConfig(num_hidden_layers=2, num_labels=1000, attn_implementation="eager")
    model = ViTForImageClassification(config).eval()
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    with torch.no_grad():
        for p in feature_map_parameters(model).values():
            p.add_(0.3 * torch.randn_like(p))
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        reference = copy.deepcopy(model).double()(pixel_values=pixels.double()).logits
        calls = _spy_on_fused_kernel(monkeypatch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model.cuda()(pixel_values=pixels.cuda()).logits
    assert calls == [False, False]
    assert rel(logits.float().cpu(), reference) < 2 * GPU_TOL
