"""causal_conv1d_fwd and causal_conv1d_update against the token-by-token fp32 reference.

T = total tokens, B = decode batch, N = sequences, S = state slots, D = conv channels, W = conv width,
L = conv state length.
"""
import pytest
import torch
import torch.nn.functional as F

from qwen3next_kernels.conv import (causal_conv1d_fwd, causal_conv1d_update, naive_causal_conv1d_fwd,
                                    naive_causal_conv1d_update)

NUM_SLOTS = 9
SLOTS = [5, 2, 7, 0, 8, 3]  # non-trivial slot order in a cache of NUM_SLOTS
HAS_INITIAL_STATE = [True, False, True, True, False, True]


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt()).item()


def make_inputs(T, D, W, L, dtype, state_dtype, bias, strided, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D + 8 if strided else D, generator=gen).to(dtype)[:, :D]  # a row-strided view when strided
    weight = (0.5 * torch.randn(D, W, generator=gen)).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    states = torch.randn(NUM_SLOTS, L, D, generator=gen).to(state_dtype)
    return x, weight, b, states


def make_cu_seqlens(seqlens):
    return torch.tensor([0] + seqlens, dtype=torch.int32).cumsum(0, dtype=torch.int32)


def assert_untouched(states, states0, used_slots):
    for s in range(NUM_SLOTS):
        if s not in used_slots:
            assert torch.equal(states[s], states0[s]), f"slot {s} changed"


def plain_bf16_conv(x, weight, bias, states0, cu_seqlens, slots, has_initial_state, W, silu):
    """The same conv in bf16 arithmetic (F.conv1d), the yardstick for bf16 error."""
    outs = []
    for n in range(len(slots)):
        x_n = x[cu_seqlens[n]:cu_seqlens[n + 1]]
        history = states0[slots[n], -(W - 1):] if has_initial_state[n] else torch.zeros(W - 1, x.shape[1])
        xx = torch.cat([history.bfloat16(), x_n.bfloat16()])  # [W - 1 + Ls, D]
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
    return (f"L{'-'.join(map(str, seqlens))}-D{D}-W{W}-stateL{L}-{str(dtype)[6:]}-state_{str(state_dtype)[6:]}"
            f"{'-bias' if bias else ''}{'-silu' if silu else ''}{'-strided' if strided else ''}")


@pytest.mark.parametrize(("seqlens", "D", "W", "L", "dtype", "state_dtype", "bias", "silu", "strided"),
                         [pytest.param(*c, id=fwd_id(*c)) for c in FWD_CASES])
def test_causal_conv1d_fwd(seqlens, D, W, L, dtype, state_dtype, bias, silu, strided):
    N = len(seqlens)
    x, weight, b, states0 = make_inputs(sum(seqlens), D, W, L, dtype, state_dtype, bias, strided)
    cu_seqlens = make_cu_seqlens(seqlens)
    cache_indices = torch.tensor(SLOTS[:N], dtype=torch.int32)
    has_initial_state = torch.tensor(HAS_INITIAL_STATE[:N])
    states0[cache_indices[~has_initial_state].long()] = float("nan")  # must not be read

    ref_states = states0.clone()
    ref = naive_causal_conv1d_fwd(x.float(), weight.float(), None if b is None else b.float(), ref_states,
                                  cu_seqlens, cache_indices, has_initial_state, silu)
    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu_seqlens, cache_indices, has_initial_state, silu)

    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    if dtype == torch.float32:
        assert rel_rms(out, ref) < 1e-6
    else:
        plain = plain_bf16_conv(x, weight, b, states0, cu_seqlens, SLOTS[:N], HAS_INITIAL_STATE[:N], W, silu)
        assert rel_rms(out, ref) <= 2 * rel_rms(plain, ref)
    assert torch.equal(states, ref_states)  # state rows are copies of inputs
    assert_untouched(states, states0, SLOTS[:N])


def test_causal_conv1d_fwd_varlen_matches_single_calls():
    seqlens, D, W, L = [65, 1, 2, 130], 24, 4, 5
    x, weight, b, states0 = make_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, True)
    cu = make_cu_seqlens(seqlens)

    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu, torch.tensor(SLOTS[:4], dtype=torch.int32),
                            torch.tensor(HAS_INITIAL_STATE[:4]), True)
    ref_states = states0.clone()
    for n in range(len(seqlens)):
        bos, eos = cu[n].item(), cu[n + 1].item()
        out_n = causal_conv1d_fwd(x[bos:eos], weight, b, ref_states, make_cu_seqlens([eos - bos]),
                                  torch.tensor([SLOTS[n]], dtype=torch.int32), torch.tensor([HAS_INITIAL_STATE[n]]),
                                  True)
        assert torch.equal(out[bos:eos], out_n)
    assert torch.equal(states, ref_states)


def test_causal_conv1d_fwd_padded_entry():
    seqlens, D, W, L = [20, 30, 5], 16, 4, 3
    x, weight, b, states0 = make_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, False)
    cu = make_cu_seqlens(seqlens)
    cache_indices = torch.tensor([5, -1, 2], dtype=torch.int32)
    has_initial_state = torch.tensor([True, True, False])

    states = states0.clone()
    out = causal_conv1d_fwd(x, weight, b, states, cu, cache_indices, has_initial_state, True)
    ref_states = states0.clone()
    ref = naive_causal_conv1d_fwd(x, weight, b, ref_states, cu, cache_indices, has_initial_state, True)
    assert torch.equal(out[20:50], torch.zeros(30, D))
    assert rel_rms(out, ref) < 1e-6 and torch.equal(states, ref_states)
    assert_untouched(states, states0, [5, 2])

    states = states0.clone()
    causal_conv1d_fwd(x[20:50], weight, b, states, make_cu_seqlens([30]), torch.tensor([-1], dtype=torch.int32),
                      torch.tensor([True]), True)
    assert torch.equal(states, states0)


@pytest.mark.parametrize("splits", [[1, 2, 60], [64, 1, 1, 34], [3, 97]], ids=lambda s: "split" + "-".join(map(str, s)))
def test_causal_conv1d_fwd_continued(splits):
    """Calls continued from the previous call's conv state equal one call over the concatenation."""
    D, W, L = 24, 4, 5
    x, weight, b, states0 = make_inputs(sum(splits), D, W, L, torch.float32, torch.float32, True, True)
    slot = torch.tensor([7], dtype=torch.int32)

    whole_states = states0.clone()
    whole = causal_conv1d_fwd(x, weight, b, whole_states, make_cu_seqlens([sum(splits)]), slot,
                              torch.tensor([False]), True)
    states = states0.clone()
    bos = 0
    for i, n in enumerate(splits):
        out = causal_conv1d_fwd(x[bos:bos + n], weight, b, states, make_cu_seqlens([n]), slot,
                                torch.tensor([i > 0]), True)
        assert rel_rms(out, whole[bos:bos + n]) < 1e-6
        bos += n
    assert torch.equal(states, whole_states)
    assert_untouched(states, states0, [7])


def test_causal_conv1d_fwd_then_update():
    """Prefill then decode steps equal one prefill over all tokens."""
    D, W, L, T0, steps = 24, 4, 3, 65, 3
    x, weight, b, states0 = make_inputs(T0 + steps, D, W, L, torch.float32, torch.float32, True, False)
    slot = torch.tensor([2], dtype=torch.int32)

    whole_states = states0.clone()
    whole = causal_conv1d_fwd(x, weight, b, whole_states, make_cu_seqlens([T0 + steps]), slot, torch.tensor([True]),
                              True)
    states = states0.clone()
    causal_conv1d_fwd(x[:T0], weight, b, states, make_cu_seqlens([T0]), slot, torch.tensor([True]), True)
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
                                                f"-{str(c[4])[6:]}-state_{str(c[5])[6:]}"
                                                f"{'-bias' if c[6] else ''}{'-silu' if c[7] else ''}")
                          for c in UPDATE_CASES])
def test_causal_conv1d_update(slots, D, W, L, dtype, state_dtype, bias, silu):
    B = len(slots)
    x, weight, b, states0 = make_inputs(B, D, W, L, dtype, state_dtype, bias, True)
    cache_indices = torch.tensor(slots, dtype=torch.int32)

    ref_states = states0.clone()
    ref = naive_causal_conv1d_update(x.float(), weight.float(), None if b is None else b.float(), ref_states,
                                     cache_indices, silu)
    states = states0.clone()
    out = causal_conv1d_update(x, weight, b, states, cache_indices, silu)

    assert out.shape == (B, D) and out.dtype == dtype
    padded = cache_indices < 0
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))
    if not padded.all():
        assert rel_rms(out[~padded], ref[~padded]) < (1e-6 if dtype == torch.float32 else 4e-3)
    assert torch.equal(states, ref_states)
    assert_untouched(states, states0, [s for s in slots if s >= 0])


def test_causal_conv1d_conv_states_as_transposed_view():
    """conv_states may be a view of a [S, D, L] cache (channels outer), as a hybrid KV cache lays it out."""
    seqlens, D, W, L = [65, 3], 24, 4, 3
    x, weight, b, states0 = make_inputs(sum(seqlens), D, W, L, torch.float32, torch.float32, True, False)
    cu = make_cu_seqlens(seqlens)
    cache_indices = torch.tensor([5, 2], dtype=torch.int32)
    has_initial_state = torch.tensor([True, False])

    ref_states = states0.clone()
    ref = causal_conv1d_fwd(x, weight, b, ref_states, cu, cache_indices, has_initial_state, True)
    ref_update = causal_conv1d_update(x[:2], weight, b, ref_states, cache_indices, True)
    states = states0.transpose(1, 2).contiguous().transpose(1, 2)  # [S, L, D] view of [S, D, L] storage
    out = causal_conv1d_fwd(x, weight, b, states, cu, cache_indices, has_initial_state, True)
    out_update = causal_conv1d_update(x[:2], weight, b, states, cache_indices, True)
    assert torch.equal(out, ref) and torch.equal(out_update, ref_update) and torch.equal(states, ref_states)


def test_opcheck_causal_conv1d_fwd():
    x, weight, b, states = make_inputs(70, 16, 4, 3, torch.float32, torch.float32, True, True)
    torch.library.opcheck(torch.ops.qwen3next.causal_conv1d_fwd.default,
                          (x, weight, b, states, make_cu_seqlens([65, 5]), torch.tensor([5, -1], dtype=torch.int32),
                           torch.tensor([True, False]), True))
    torch.library.opcheck(torch.ops.qwen3next.causal_conv1d_fwd.default,
                          (x, weight, None, states, make_cu_seqlens([70]), torch.tensor([2], dtype=torch.int32),
                           torch.tensor([False]), False))


def test_opcheck_causal_conv1d_update():
    x, weight, b, states = make_inputs(3, 16, 4, 3, torch.bfloat16, torch.bfloat16, True, False)
    torch.library.opcheck(torch.ops.qwen3next.causal_conv1d_update.default,
                          (x, weight, b, states, torch.tensor([5, -1, 2], dtype=torch.int32), True))
