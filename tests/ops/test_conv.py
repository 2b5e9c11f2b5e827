"""causal_conv1d_fwd, causal_conv1d_update and causal_conv1d_verify against the token-by-token fp32 references: the
CPU op in detail, then the same checks on every device (CPU, Triton interpreted, each CUDA backend), then opcheck."""
import pytest
import torch
import torch.nn.functional as F
from utils import (QWEN_D, LENS, assert_opcheck, assert_untouched, check_causal_conv1d_fwd, triton_devices,
                   check_causal_conv1d_update, check_causal_conv1d_verify, conv_inputs, cu_seqlens, dtype_id, i32,
                   on_devices, opcheck_params, rel_rms)

from qwen3next_kernels.conv import (causal_conv1d_fwd, causal_conv1d_update, causal_conv1d_verify,
                                    naive_causal_conv1d_fwd, naive_causal_conv1d_update, naive_causal_conv1d_verify)

SLOTS = [5, 2, 7, 0, 8, 3]  # non-trivial slot order in a cache of 9
HAS_INITIAL_STATE = [True, False, True, True, False, True]


def plain_bf16_conv(x, weight, bias, states0, cu, slots, has_initial_state, W, silu):
    """The same conv in bf16 arithmetic (F.conv1d), the yardstick for bf16 error."""
    outs = []
    for n in range(len(slots)):
        x_n = x[cu[n]:cu[n + 1]]
        history = states0[slots[n], -(W - 1):] if has_initial_state[n] else torch.zeros(W - 1, x.shape[1])
        xx = torch.cat([history.bfloat16(), x_n.bfloat16()])  # [W - 1 + Q, D]
        y = F.conv1d(xx.T[None], weight.bfloat16()[:, None], None if bias is None else bias.bfloat16(),
                     groups=x.shape[1])[0].T
        outs.append(F.silu(y) if silu else y)
    return torch.cat(outs)


FWD_CASES = [
    # (seqlens, D, W, L, dtype, state_dtype, bias, silu, strided)
    ([1], 16, 4, 3, torch.float32, torch.float32, True, True, False),
    ([63, 64, 65], 24, 4, 3, torch.float32, torch.float32, True, True, True),
    ([500, 2, 1], 40, 4, 5, torch.float32, torch.float32, False, False, True),
    ([70, 3], 16, 2, 1, torch.float32, torch.float32, True, False, False),
    ([65, 0, 3], 16, 4, 3, torch.float32, torch.float32, True, True, False),
    ([200, 65], 32, 4, 3, torch.bfloat16, torch.bfloat16, True, True, True),
    ([200, 65], 32, 4, 3, torch.bfloat16, torch.float32, False, True, False),
    ([100, 7], 32, 4, 4, torch.float32, torch.bfloat16, True, True, True),
]


def fwd_id(seqlens, D, W, L, dtype, state_dtype, bias, silu, strided):
    return (f"L{'-'.join(map(str, seqlens))}-D{D}-W{W}-stateL{L}-{dtype_id(dtype)}-state_{dtype_id(state_dtype)}"
            f"{'-bias' if bias else ''}{'-silu' if silu else ''}{'-strided' if strided else ''}")


@pytest.mark.parametrize(("seqlens", "D", "W", "L", "dtype", "state_dtype", "bias", "silu", "strided"),
                         [pytest.param(*c, id=fwd_id(*c)) for c in FWD_CASES])
def test_causal_conv1d_fwd(seqlens, D, W, L, dtype, state_dtype, bias, silu, strided):
    N = len(seqlens)
    x, weight, b, states0 = conv_inputs(sum(seqlens), D, W, L, dtype, state_dtype, bias, strided)
    cu = cu_seqlens(seqlens)
    state_indices = i32(SLOTS[:N])
    has_initial_state = torch.tensor(HAS_INITIAL_STATE[:N])
    states0[state_indices[~has_initial_state].long()] = float("nan")  # must not be read

    ref_states = states0.clone()
    ref = naive_causal_conv1d_fwd(x.float(), weight.float(), None if b is None else b.float(), ref_states, cu,
                                  state_indices, has_initial_state, silu)
    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu, state_indices, has_initial_state, silu)

    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    if dtype == torch.float32:
        assert rel_rms(out, ref) < 1e-6
    else:
        plain = plain_bf16_conv(x, weight, b, states0, cu, SLOTS[:N], HAS_INITIAL_STATE[:N], W, silu)
        assert rel_rms(out, ref) <= 2 * rel_rms(plain, ref)
    assert torch.equal(states, ref_states)  # state rows are copies of inputs
    assert_untouched(states, states0, SLOTS[:N])


def test_causal_conv1d_fwd_varlen_matches_single_calls():
    seqlens, D, W, L = [65, 1, 2, 130], 24, 4, 5
    x, weight, b, states0 = conv_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, True)
    cu = cu_seqlens(seqlens)

    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu, i32(SLOTS[:4]), torch.tensor(HAS_INITIAL_STATE[:4]), True)
    ref_states = states0.clone()
    for n in range(len(seqlens)):
        bos, eos = cu[n].item(), cu[n + 1].item()
        out_n = causal_conv1d_fwd(x[bos:eos], weight, b, ref_states, cu_seqlens([eos - bos]), i32([SLOTS[n]]),
                                  torch.tensor([HAS_INITIAL_STATE[n]]), True)
        assert torch.equal(out[bos:eos], out_n)
    assert torch.equal(states, ref_states)


def test_causal_conv1d_fwd_padded_entry():
    seqlens, D, W, L = [20, 30, 5], 16, 4, 3
    x, weight, b, states0 = conv_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, False)
    cu = cu_seqlens(seqlens)
    state_indices = i32([5, -1, 2])
    has_initial_state = torch.tensor([True, True, False])

    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu, state_indices, has_initial_state, True)
    ref_states = states0.clone()
    ref = naive_causal_conv1d_fwd(x, weight, b, ref_states, cu, state_indices, has_initial_state, True)
    assert torch.equal(out[20:50], torch.zeros(30, D))
    assert rel_rms(out, ref) < 1e-6 and torch.equal(states, ref_states)
    assert_untouched(states, states0, [5, 2])

    states = states0.clone()
    causal_conv1d_fwd(x[20:50], weight, b, states, cu_seqlens([30]), i32([-1]), torch.tensor([True]), True)
    assert torch.equal(states, states0)


@pytest.mark.parametrize("splits", [[1, 2, 60], [64, 1, 1, 34], [3, 97]], ids=lambda s: "split" + "-".join(map(str, s)))
def test_causal_conv1d_fwd_continued(splits):
    """Calls continued from the previous call's conv state equal one call over the concatenation."""
    D, W, L = 24, 4, 5
    x, weight, b, states0 = conv_inputs(sum(splits), D, W, L, torch.float32, torch.float32, True, True)
    slot = i32([7])

    whole_states = states0.clone()
    whole = causal_conv1d_fwd(x, weight, b, whole_states, cu_seqlens([sum(splits)]), slot, torch.tensor([False]),
                              True)
    states = states0.clone()
    bos = 0
    for i, n in enumerate(splits):
        out = causal_conv1d_fwd(x[bos:bos + n], weight, b, states, cu_seqlens([n]), slot, torch.tensor([i > 0]), True)
        assert rel_rms(out, whole[bos:bos + n]) < 1e-6
        bos += n
    assert torch.equal(states, whole_states)
    assert_untouched(states, states0, [7])


def test_causal_conv1d_fwd_then_update():
    """Prefill then decode steps equal one prefill over all tokens."""
    D, W, L, T0, steps = 24, 4, 3, 65, 3
    x, weight, b, states0 = conv_inputs(T0 + steps, D, W, L, torch.float32, torch.float32, True, False)
    slot = i32([2])

    whole_states = states0.clone()
    whole = causal_conv1d_fwd(x, weight, b, whole_states, cu_seqlens([T0 + steps]), slot, torch.tensor([True]), True)
    states = states0.clone()
    causal_conv1d_fwd(x[:T0], weight, b, states, cu_seqlens([T0]), slot, torch.tensor([True]), True)
    for t in range(T0, T0 + steps):
        out = causal_conv1d_update(x[t:t + 1], weight, b, states, slot, True)
        assert rel_rms(out, whole[t:t + 1]) < 1e-6
    assert torch.equal(states, whole_states)


UPDATE_CASES = [
    # (slots, D, W, L, dtype, state_dtype, bias, silu)
    ([5], 16, 4, 3, torch.float32, torch.float32, True, True),
    ([5, -1, 2, 7], 40, 4, 3, torch.float32, torch.float32, False, True),
    ([5, 2, 7], 24, 4, 6, torch.float32, torch.float32, True, False),
    ([8, -1, 0], 32, 4, 3, torch.bfloat16, torch.bfloat16, True, True),
    ([3, 1], 32, 4, 3, torch.float32, torch.bfloat16, True, True),
    ([-1, -1], 16, 4, 3, torch.float32, torch.float32, True, True),
]


@pytest.mark.parametrize(("slots", "D", "W", "L", "dtype", "state_dtype", "bias", "silu"),
                         [pytest.param(*c, id=f"slots{'_'.join(map(str, c[0]))}-D{c[1]}-W{c[2]}-stateL{c[3]}"
                                              f"-{dtype_id(c[4])}-state_{dtype_id(c[5])}"
                                              f"{'-bias' if c[6] else ''}{'-silu' if c[7] else ''}")
                          for c in UPDATE_CASES])
def test_causal_conv1d_update(slots, D, W, L, dtype, state_dtype, bias, silu):
    B = len(slots)
    x, weight, b, states0 = conv_inputs(B, D, W, L, dtype, state_dtype, bias, True)
    state_indices = i32(slots)

    ref_states = states0.clone()
    ref = naive_causal_conv1d_update(x.float(), weight.float(), None if b is None else b.float(), ref_states,
                                     state_indices, silu)
    states = states0.clone()
    out = causal_conv1d_update(x, weight, b, states, state_indices, silu)

    assert out.shape == (B, D) and out.dtype == dtype
    padded = state_indices < 0
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))
    if not padded.all():
        assert rel_rms(out[~padded], ref[~padded]) < (1e-6 if dtype == torch.float32 else 4e-3)
    assert torch.equal(states, ref_states)
    assert_untouched(states, states0, [s for s in slots if s >= 0])


def test_causal_conv1d_conv_states_as_transposed_view():
    """conv_states may be a view of a [S, D, L] cache (channels outer), as a hybrid KV cache lays it out."""
    seqlens, D, W, L = [65, 3], 24, 4, 3
    x, weight, b, states0 = conv_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, False)
    cu = cu_seqlens(seqlens)
    state_indices = i32([5, 2])
    has_initial_state = torch.tensor([True, False])

    ref_states = states0.clone()
    ref = causal_conv1d_fwd(x, weight, b, ref_states, cu, state_indices, has_initial_state, True)
    ref_update = causal_conv1d_update(x[:2], weight, b, ref_states, state_indices, True)
    states = states0.transpose(1, 2).contiguous().transpose(1, 2)  # [S, L, D] view of [S, D, L] storage
    out = causal_conv1d_fwd(x, weight, b, states, cu, state_indices, has_initial_state, True)
    out_update = causal_conv1d_update(x[:2], weight, b, states, state_indices, True)
    assert torch.equal(out, ref) and torch.equal(out_update, ref_update) and torch.equal(states, ref_states)


@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
def test_causal_conv1d_verify_matches_naive(k):
    D, W = 24, 4
    L = W - 1 + k
    lens = [k + 1, k + 1, 1]
    slots = i32([7, -1, 3])
    accepted = i32([k + 1, 1, 1])
    x = torch.randn(sum(lens), D)
    weight, states = torch.randn(D, W), torch.randn(12, L, D)
    ref_states = states.clone()
    out = causal_conv1d_verify(x, weight, None, states, cu_seqlens(lens), slots, accepted, True)
    ref = naive_causal_conv1d_verify(x, weight, None, ref_states, cu_seqlens(lens), slots, accepted, True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, ref_states)
    assert out[k + 1:2 * k + 2].abs().sum() == 0  # padded sequence: zeros


@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("accept", ["none", "some", "all"])
def test_causal_conv1d_verify_continues_from_accepted(k, accept):
    """Prefill, verify Q = k + 1 tokens, accept a of them, verify again: the second step's outputs equal a plain
    causal conv over prompt + accepted + new tokens."""
    D, W = 16, 4
    L = W - 1 + k
    a = {"none": 1, "some": max(1, k // 2 + 1), "all": k + 1}[accept]
    prompt, step1, step2 = torch.randn(9, D), torch.randn(k + 1, D), torch.randn(k + 1, D)
    weight = torch.randn(D, W)
    states = torch.zeros(12, L, D)
    slot = i32([4])
    # Prefill writes the window to rows [0, W - 1) (vLLM's non-speculative layout).
    window = states[:, : W - 1]
    naive_causal_conv1d_fwd(prompt, weight, None, window, cu_seqlens([9]), slot, torch.zeros(1, dtype=torch.bool),
                            True)
    causal_conv1d_verify(step1, weight, None, states, cu_seqlens([k + 1]), slot, i32([1]), True)
    out = causal_conv1d_verify(step2, weight, None, states, cu_seqlens([k + 1]), slot, i32([a]), True)
    history = torch.cat([prompt, step1[:a], step2])
    full = naive_causal_conv1d_fwd(history, weight, None, torch.zeros(1, W - 1, D), cu_seqlens([len(history)]),
                                   i32([0]), torch.zeros(1, dtype=torch.bool), True)
    torch.testing.assert_close(out, full[-(k + 1):], rtol=1e-5, atol=1e-5)


FWD_SMALL = {
    "L1-63-64-65": dict(lens=[1, 63, 64, 65], D=136, L=3),
    "bf16-L5": dict(lens=[2, 1, 130, 3], D=136, L=5, dtype=torch.bfloat16, state_dtype=torch.bfloat16, bias=False),
    "short-no_silu": dict(lens=[1, 2, 1], D=136, L=4, silu=False),
}
FWD_QWEN = {
    "fp32": dict(lens=LENS, D=QWEN_D),
    "bf16": dict(lens=LENS, D=QWEN_D, dtype=torch.bfloat16, state_dtype=torch.bfloat16, bias=False),
    "bf16-fp32state-L5": dict(lens=LENS, D=QWEN_D, L=5, dtype=torch.bfloat16),
    "short-no_silu": dict(lens=[1, 2, 1, 3, 2], D=300, L=4, silu=False),
}


@pytest.mark.parametrize(("device", "case"), on_devices("causal_conv1d_fwd", FWD_SMALL, FWD_QWEN))
def test_causal_conv1d_fwd_devices(run, device, case):
    run(check_causal_conv1d_fwd, device, **case)


@pytest.mark.parametrize("launch", [dict(rows=True, BT=16, BD=64), dict(rows=True, BT=4, BD=64, W=3),
                                    dict(rows=True, BT=8, BD=64, W=2, L=1), dict(rows=False, BT=16, BD=64),
                                    dict(rows=None, W=1, L=1)],
                         ids=["rows", "rows-W3-BT4", "rows-W2-L1-BT8", "tile", "default-W1"])
@pytest.mark.parametrize("device", triton_devices("causal_conv1d_fwd"))
def test_causal_conv1d_fwd_kernels(run, device, launch):
    """Both Triton conv prefill kernels at small blocks: chunks of 4 to 16 tokens across sequences of 1 to 65 tokens
    and channel blocks with a partial last one; the rows kernel's groups of 4 rows with 4, 3 and 2 taps; one tap
    (the tile kernel's by default)."""
    run(check_causal_conv1d_fwd, device, [1, 15, 16, 17, 65, 2], 136, **launch)


@pytest.mark.parametrize("L", [3, 6])
@pytest.mark.parametrize("device", triton_devices("causal_conv1d_update"))
def test_causal_conv1d_update_small_blocks(run, device, L):
    """The Triton conv update at small channel blocks: a partial last block, padding slots, states of W - 1 rows and
    longer (speculative decoding's)."""
    run(check_causal_conv1d_update, device, 5, 136, L=L, dtype=torch.bfloat16, state_dtype=torch.bfloat16, BD=64,
        num_warps=2)


UPDATE_SMALL = {
    "B1-L3": dict(B=1, D=300, L=3),
    "B5-L6-bf16": dict(B=5, D=300, L=6, dtype=torch.bfloat16, state_dtype=torch.bfloat16),
}
UPDATE_QWEN = {
    "B1-fp32": dict(B=1, D=QWEN_D, L=3),
    "B64-bf16": dict(B=64, D=QWEN_D, L=3, dtype=torch.bfloat16, state_dtype=torch.bfloat16),
    "B7-L6-fp32": dict(B=7, D=QWEN_D, L=6),
}


@pytest.mark.parametrize(("device", "case"), on_devices("causal_conv1d_update", UPDATE_SMALL, UPDATE_QWEN))
def test_causal_conv1d_update_devices(run, device, case):
    run(check_causal_conv1d_update, device, **case)


VERIFY_SMALL = {
    f"k{k}-{name}": dict(N=6, k=k, D=136, dtype=dtype, state_dtype=dtype, bias=bias, silu=silu, seed=k)
    for k in (1, 2, 4)
    for name, dtype, bias, silu in [("fp32", torch.float32, True, True), ("bf16-no_bias", torch.bfloat16, False, True),
                                    ("fp32-no_silu", torch.float32, False, False)]
}
VERIFY_QWEN = {
    f"k{k}-{dtype_id(dtype)}": dict(N=24, k=k, D=QWEN_D, dtype=dtype, state_dtype=dtype, bias=False)
    for k in (1, 2, 4) for dtype in (torch.bfloat16, torch.float32)
}


@pytest.mark.parametrize(("device", "case"), on_devices("causal_conv1d_verify", VERIFY_SMALL, VERIFY_QWEN))
def test_causal_conv1d_verify_devices(run, device, case):
    run(check_causal_conv1d_verify, device, **case)


@pytest.mark.parametrize(("op", "device"),
                         opcheck_params(["causal_conv1d_fwd", "causal_conv1d_update", "causal_conv1d_verify"]))
def test_opcheck(op, device):
    assert_opcheck(op, device)
