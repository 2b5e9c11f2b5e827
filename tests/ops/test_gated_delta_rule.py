"""chunk_gated_delta_rule and fused_recurrent_gated_delta_rule against the token-by-token fp32 reference.

T = total tokens, B = decode batch, N = sequences, S = state slots, H = key heads, HV = value heads,
K = key head dim, V = value head dim.
"""
import pytest
import torch
import torch.nn.functional as F

from qwen3next_kernels.gated_delta_rule import chunk as chunk_module
from qwen3next_kernels.gated_delta_rule import (chunk_gated_delta_rule, fused_recurrent_gated_delta_rule,
                                                naive_fused_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule)

NUM_SLOTS = 9
SLOTS = [5, 2, 7, 0, 8, 3]  # non-trivial slot order in a cache of NUM_SLOTS
HAS_INITIAL_STATE = [True, False, True, True, False, True]


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt()).item()


def o_tol(dtype: torch.dtype) -> float:
    # bf16 outputs are fp32 math rounded once to bf16, a relative RMS error of about 1.6e-3
    return 1e-5 if dtype == torch.float32 else 4e-3


def state_tol(dtype: torch.dtype) -> float:
    # a bf16 cache is written once from fp32: the two roundings rarely differ
    return 1e-5 if dtype == torch.float32 else 1e-3


def make_inputs(T, H, HV, K, V, dtype, gates="random", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, K, generator=gen).to(dtype)
    k = torch.randn(T, H, K, generator=gen).to(dtype)
    v = torch.randn(T, HV, V, generator=gen).to(dtype)
    g = F.logsigmoid(torch.randn(T, HV, generator=gen))
    beta = torch.rand(T, HV, generator=gen)
    if gates == "g_near_0":
        g = torch.full((T, HV), -1e-6)
    elif gates == "g_-20":
        g = -20 - torch.rand(T, HV, generator=gen)
    elif gates == "beta_near_0":
        beta = torch.full((T, HV), 1e-6)
    elif gates == "beta_near_1":
        beta = torch.full((T, HV), 1 - 1e-6)
    return q, k, v, g, beta


def make_states(HV, K, V, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(NUM_SLOTS, HV, K, V, generator=gen)).to(dtype)


def make_cu_seqlens(seqlens):
    return torch.tensor([0] + seqlens, dtype=torch.int32).cumsum(0, dtype=torch.int32)


def assert_untouched(states, states0, used_slots):
    for s in range(NUM_SLOTS):
        if s not in used_slots:
            assert torch.equal(states[s], states0[s]), f"slot {s} changed"


CHUNK_CASES = [
    # (seqlens, H, HV, K, V, dtype, state_dtype, use_qk_l2norm)
    ([1], 1, 1, 16, 16, torch.float32, torch.float32, True),
    ([63], 1, 1, 32, 32, torch.float32, torch.float32, True),
    ([64], 2, 4, 32, 16, torch.float32, torch.float32, True),
    ([65, 1, 130], 2, 4, 32, 16, torch.float32, torch.float32, True),
    ([500, 37], 2, 4, 32, 32, torch.float32, torch.float32, True),
    ([129, 64, 3], 2, 4, 16, 32, torch.float32, torch.float32, False),
    ([65, 0, 3], 2, 4, 16, 16, torch.float32, torch.float32, True),
    ([200, 65], 2, 4, 32, 32, torch.bfloat16, torch.float32, True),
    ([200, 65], 2, 4, 32, 32, torch.float32, torch.bfloat16, True),
    ([500, 1, 64], 2, 4, 32, 32, torch.bfloat16, torch.bfloat16, True),
]


def case_id(seqlens, H, HV, K, V, dtype, state_dtype, l2):
    return (f"L{'-'.join(map(str, seqlens))}-H{H}-HV{HV}-K{K}-V{V}-{str(dtype)[6:]}"
            f"-state_{str(state_dtype)[6:]}{'-l2' if l2 else ''}")


@pytest.mark.parametrize(("seqlens", "H", "HV", "K", "V", "dtype", "state_dtype", "use_qk_l2norm"),
                         [pytest.param(*c, id=case_id(*c)) for c in CHUNK_CASES])
def test_chunk_gated_delta_rule(seqlens, H, HV, K, V, dtype, state_dtype, use_qk_l2norm):
    N, T = len(seqlens), sum(seqlens)
    q, k, v, g, beta = make_inputs(T, H, HV, K, V, dtype)
    if not use_qk_l2norm:  # keep the delta rule contractive without the in-kernel norm
        q, k = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k.float(), dim=-1).to(dtype)
    states0 = make_states(HV, K, V, state_dtype)
    cu_seqlens = make_cu_seqlens(seqlens)
    state_indices = torch.tensor(SLOTS[:N], dtype=torch.int32)
    has_initial_state = torch.tensor(HAS_INITIAL_STATE[:N])
    states0[state_indices[~has_initial_state].long()] = float("nan")  # must not be read
    scale = K ** -0.5

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, scale, ref_states, cu_seqlens,
                                           state_indices, has_initial_state, use_qk_l2norm)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, scale, states, cu_seqlens, state_indices, has_initial_state,
                               use_qk_l2norm)

    assert o.shape == (T, HV, V) and o.dtype == dtype
    assert rel_rms(o, ref) < o_tol(dtype)
    assert states.dtype == state_dtype
    assert rel_rms(states[SLOTS[:N]], ref_states[SLOTS[:N]]) < state_tol(state_dtype)
    assert_untouched(states, states0, SLOTS[:N])


@pytest.mark.parametrize("gates", ["g_near_0", "g_-20", "beta_near_0", "beta_near_1"])
def test_chunk_gated_delta_rule_extreme_gates(gates):
    seqlens, H, HV, K, V = [150, 65], 2, 4, 32, 32
    q, k, v, g, beta = make_inputs(sum(seqlens), H, HV, K, V, torch.float32, gates)
    states0 = make_states(HV, K, V, torch.float32)
    args = (make_cu_seqlens(seqlens), torch.tensor(SLOTS[:2], dtype=torch.int32), torch.tensor([True, False]), True)

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, K ** -0.5, ref_states, *args)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, K ** -0.5, states, *args)

    assert o.isfinite().all() and states.isfinite().all()
    assert rel_rms(o, ref) < 1e-5
    assert rel_rms(states, ref_states) < 1e-5


def test_chunk_gated_delta_rule_varlen_matches_single_calls():
    seqlens, H, HV, K, V = [65, 1, 200, 64], 2, 4, 32, 16
    q, k, v, g, beta = make_inputs(sum(seqlens), H, HV, K, V, torch.float32)
    states0 = make_states(HV, K, V, torch.float32)
    cu = make_cu_seqlens(seqlens)

    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, states, cu, torch.tensor(SLOTS[:4], dtype=torch.int32),
                               torch.tensor(HAS_INITIAL_STATE[:4]), True)

    ref_states = states0.clone()
    for n in range(len(seqlens)):
        bos, eos = cu[n].item(), cu[n + 1].item()
        o_n = chunk_gated_delta_rule(q[bos:eos], k[bos:eos], v[bos:eos], g[bos:eos], beta[bos:eos], 0.2, ref_states,
                                     make_cu_seqlens([eos - bos]), torch.tensor([SLOTS[n]], dtype=torch.int32),
                                     torch.tensor([HAS_INITIAL_STATE[n]]), True)
        assert rel_rms(o[bos:eos], o_n) < 1e-6
    assert rel_rms(states, ref_states) < 1e-6


@pytest.mark.parametrize("group_chunks", [1, 3])
def test_chunk_gated_delta_rule_chunk_groups(group_chunks, monkeypatch):
    """Long prefills run in groups of chunks; small groups (down to one step per group) change nothing."""
    seqlens, H, HV, K, V = [300, 1, 130, 65, 64], 2, 4, 16, 16
    q, k, v, g, beta = make_inputs(sum(seqlens), H, HV, K, V, torch.float32)
    states0 = make_states(HV, K, V, torch.float32)
    args = (make_cu_seqlens(seqlens), torch.tensor(SLOTS[:5], dtype=torch.int32),
            torch.tensor(HAS_INITIAL_STATE[:5]), True)

    ref_states = states0.clone()
    ref = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, ref_states, *args)
    monkeypatch.setattr(chunk_module, "GROUP_CHUNKS", group_chunks)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, states, *args)
    assert rel_rms(o, ref) < 1e-6 and rel_rms(states, ref_states) < 1e-6


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_chunk_gated_delta_rule_padded_entry(state_dtype):
    seqlens, H, HV, K, V = [70, 30, 5], 1, 2, 16, 16
    q, k, v, g, beta = make_inputs(sum(seqlens), H, HV, K, V, torch.float32)
    states0 = make_states(HV, K, V, state_dtype)
    cu = make_cu_seqlens(seqlens)

    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, states, cu, torch.tensor([5, -1, 2], dtype=torch.int32),
                               torch.tensor([True, True, False]), True)
    assert torch.equal(o[70:100], torch.zeros(30, HV, V))
    assert_untouched(states, states0, [5, 2])

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, 0.25, ref_states, cu,
                                           torch.tensor([5, -1, 2], dtype=torch.int32),
                                           torch.tensor([True, True, False]), True)
    assert rel_rms(o, ref) < 1e-5 and rel_rms(states, ref_states) < state_tol(state_dtype)

    states = states0.clone()
    chunk_gated_delta_rule(q[70:100], k[70:100], v[70:100], g[70:100], beta[70:100], 0.25, states,
                           make_cu_seqlens([30]), torch.tensor([-1], dtype=torch.int32), torch.tensor([True]), True)
    assert torch.equal(states, states0)


@pytest.mark.parametrize("splits", [[100, 200], [1, 63, 64, 172], [130, 1, 169]],
                         ids=lambda s: "split" + "-".join(map(str, s)))
def test_chunk_gated_delta_rule_continued(splits):
    """Calls continued from the previous call's final state equal one call over the concatenation."""
    H, HV, K, V = 2, 4, 32, 32
    T = sum(splits)
    q, k, v, g, beta = make_inputs(T, H, HV, K, V, torch.float32)
    states0 = make_states(HV, K, V, torch.float32)
    slot = torch.tensor([7], dtype=torch.int32)

    whole_states = states0.clone()
    whole = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, whole_states, make_cu_seqlens([T]), slot,
                                   torch.tensor([False]), True)

    states = states0.clone()
    bos = 0
    for i, n in enumerate(splits):
        eos = bos + n
        o = chunk_gated_delta_rule(q[bos:eos], k[bos:eos], v[bos:eos], g[bos:eos], beta[bos:eos], 0.2, states,
                                   make_cu_seqlens([n]), slot, torch.tensor([i > 0]), True)
        assert rel_rms(o, whole[bos:eos]) < 1e-5
        bos = eos
    assert rel_rms(states, whole_states) < 1e-5
    assert_untouched(states, states0, [7])


def test_chunk_then_fused_recurrent_decode():
    """Prefill then decode steps equal one prefill over all tokens."""
    H, HV, K, V, T0, steps = 2, 4, 32, 32, 77, 3
    q, k, v, g, beta = make_inputs(T0 + steps, H, HV, K, V, torch.float32)
    states0 = make_states(HV, K, V, torch.float32)
    slot = torch.tensor([2], dtype=torch.int32)

    whole_states = states0.clone()
    whole = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, whole_states, make_cu_seqlens([T0 + steps]), slot,
                                   torch.tensor([True]), True)
    states = states0.clone()
    chunk_gated_delta_rule(q[:T0], k[:T0], v[:T0], g[:T0], beta[:T0], 0.2, states, make_cu_seqlens([T0]), slot,
                           torch.tensor([True]), True)
    for t in range(T0, T0 + steps):
        o = fused_recurrent_gated_delta_rule(q[t:t + 1], k[t:t + 1], v[t:t + 1], g[t:t + 1], beta[t:t + 1], 0.2,
                                             states, slot, True)
        assert rel_rms(o, whole[t:t + 1]) < 1e-5
    assert rel_rms(states, whole_states) < 1e-5


RECURRENT_CASES = [
    # (B, slots, H, HV, K, V, dtype, state_dtype)
    (1, [5], 1, 1, 16, 16, torch.float32, torch.float32),
    (3, [5, 2, 7], 2, 4, 32, 16, torch.float32, torch.float32),
    (4, [5, -1, 2, 7], 2, 4, 32, 32, torch.float32, torch.float32),
    (4, [5, -1, 2, 7], 2, 4, 32, 32, torch.bfloat16, torch.float32),
    (3, [8, 0, 3], 2, 4, 32, 32, torch.float32, torch.bfloat16),
    (3, [-1, -1, -1], 1, 2, 16, 16, torch.float32, torch.float32),
]


@pytest.mark.parametrize(("B", "slots", "H", "HV", "K", "V", "dtype", "state_dtype"),
                         [pytest.param(*c, id=f"B{c[0]}-slots{'_'.join(map(str, c[1]))}-H{c[2]}-HV{c[3]}-K{c[4]}"
                                                f"-V{c[5]}-{str(c[6])[6:]}-state_{str(c[7])[6:]}")
                          for c in RECURRENT_CASES])
@pytest.mark.parametrize("gates", ["random", "g_-20", "beta_near_1"])
def test_fused_recurrent_gated_delta_rule(B, slots, H, HV, K, V, dtype, state_dtype, gates):
    q, k, v, g, beta = make_inputs(B, H, HV, K, V, dtype, gates)
    states0 = make_states(HV, K, V, state_dtype)
    state_indices = torch.tensor(slots, dtype=torch.int32)

    ref_states = states0.clone()
    ref = naive_fused_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, K ** -0.5, ref_states,
                                                 state_indices, True)
    states = states0.clone()
    o = fused_recurrent_gated_delta_rule(q, k, v, g, beta, K ** -0.5, states, state_indices, True)

    assert o.shape == (B, HV, V) and o.dtype == dtype and o.isfinite().all()
    used = [s for s in slots if s >= 0]
    if used:
        valid = state_indices >= 0
        assert rel_rms(o[valid], ref[valid]) < o_tol(dtype)
        assert rel_rms(states[used], ref_states[used]) < state_tol(state_dtype)
    assert torch.equal(o[state_indices < 0], torch.zeros_like(o[state_indices < 0]))
    assert_untouched(states, states0, used)


def test_opcheck_chunk_gated_delta_rule():
    q, k, v, g, beta = make_inputs(70, 1, 2, 16, 16, torch.float32)
    states = make_states(2, 16, 16, torch.float32)
    torch.library.opcheck(torch.ops.qwen3next.chunk_gated_delta_rule.default,
                          (q, k, v, g, beta, 0.25, states, make_cu_seqlens([65, 5]),
                           torch.tensor([5, 2], dtype=torch.int32), torch.tensor([True, False]), True))


def test_opcheck_fused_recurrent_gated_delta_rule():
    q, k, v, g, beta = make_inputs(3, 1, 2, 16, 16, torch.bfloat16)
    states = make_states(2, 16, 16, torch.bfloat16)
    torch.library.opcheck(torch.ops.qwen3next.fused_recurrent_gated_delta_rule.default,
                          (q, k, v, g, beta, 0.25, states, torch.tensor([5, -1, 2], dtype=torch.int32), True))
