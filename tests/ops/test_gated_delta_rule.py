"""chunk_gated_delta_rule, fused_recurrent_gated_delta_rule, recurrent_gated_delta_rule_verify and gdn_decode
against the token-by-token fp32 references: the CPU ops in detail, then the same checks on every device (CPU,
Triton interpreted, each CUDA backend: fla's chunk kernels too), then opcheck. gdn_decode's CPU op is checked
against the references in test_cpu_ext.py."""
import sys
import types
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from utils import (GATES, LENS, assert_opcheck, assert_untouched, check_chunk_gated_delta_rule,
                   check_fused_recurrent_gated_delta_rule, check_gdn_decode, check_recurrent_gated_delta_rule_verify,
                   assert_padded_zero, assert_states, cu_seqlens, dtype_id, i32, on_devices, opcheck_params,
                   prefill_slots, qkv_g_beta, rel_rms, triton_devices)

from qwen3next_kernels.gated_delta_rule import chunk as chunk_module
from qwen3next_kernels.gated_delta_rule import (chunk_gated_delta_rule, fused_recurrent_gated_delta_rule,
                                                naive_fused_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule_verify,
                                                recurrent_gated_delta_rule_verify)

SLOTS = [5, 2, 7, 0, 8, 3]  # non-trivial slot order in a cache of 9
HAS_INITIAL_STATE = [True, False, True, True, False, True]
SMALL = (1, 2, 16, 32)  # H, HV, K, V of the interpreted checks


def o_tol(dtype: torch.dtype) -> float:
    # bf16 outputs are fp32 math rounded once to bf16, a relative RMS error of about 1.6e-3
    return 1e-5 if dtype == torch.float32 else 4e-3


def state_tol(dtype: torch.dtype) -> float:
    # a bf16 cache is written once from fp32: the two roundings rarely differ
    return 1e-5 if dtype == torch.float32 else 1e-3


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
    return (f"L{'-'.join(map(str, seqlens))}-H{H}-HV{HV}-K{K}-V{V}-{dtype_id(dtype)}"
            f"-state_{dtype_id(state_dtype)}{'-l2' if l2 else ''}")


@pytest.mark.parametrize(("seqlens", "H", "HV", "K", "V", "dtype", "state_dtype", "use_qk_l2norm"),
                         [pytest.param(*c, id=case_id(*c)) for c in CHUNK_CASES])
def test_chunk_gated_delta_rule(seqlens, H, HV, K, V, dtype, state_dtype, use_qk_l2norm):
    N, T = len(seqlens), sum(seqlens)
    q, k, v, g, beta, states0 = qkv_g_beta(T, H, HV, K, V, dtype, state_dtype=state_dtype)
    if not use_qk_l2norm:  # keep the delta rule contractive without the in-kernel norm
        q, k = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k.float(), dim=-1).to(dtype)
    cu = cu_seqlens(seqlens)
    state_indices = i32(SLOTS[:N])
    has_initial_state = torch.tensor(HAS_INITIAL_STATE[:N])
    states0[state_indices[~has_initial_state].long()] = float("nan")  # must not be read
    scale = K ** -0.5

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, scale, ref_states, cu,
                                           state_indices, has_initial_state, use_qk_l2norm)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, scale, states, cu, state_indices, has_initial_state, use_qk_l2norm)

    assert o.shape == (T, HV, V) and o.dtype == dtype
    assert rel_rms(o, ref) < o_tol(dtype)
    assert states.dtype == state_dtype
    assert rel_rms(states[SLOTS[:N]], ref_states[SLOTS[:N]]) < state_tol(state_dtype)
    assert_untouched(states, states0, SLOTS[:N])


@pytest.mark.parametrize("gates", ["g_near_0", "g_-20", "beta_near_0", "beta_near_1"])
def test_chunk_gated_delta_rule_extreme_gates(gates):
    seqlens, H, HV, K, V = [150, 65], 2, 4, 32, 32
    q, k, v, g, beta, states0 = qkv_g_beta(sum(seqlens), H, HV, K, V, torch.float32, gates)
    args = (cu_seqlens(seqlens), i32(SLOTS[:2]), torch.tensor([True, False]), True)

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, K ** -0.5, ref_states, *args)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, K ** -0.5, states, *args)

    assert o.isfinite().all() and states.isfinite().all()
    assert rel_rms(o, ref) < 1e-5
    assert rel_rms(states, ref_states) < 1e-5


def test_chunk_gated_delta_rule_varlen_matches_single_calls():
    seqlens, H, HV, K, V = [65, 1, 200, 64], 2, 4, 32, 16
    q, k, v, g, beta, states0 = qkv_g_beta(sum(seqlens), H, HV, K, V, torch.float32)
    cu = cu_seqlens(seqlens)

    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, states, cu, i32(SLOTS[:4]), torch.tensor(HAS_INITIAL_STATE[:4]),
                               True)

    ref_states = states0.clone()
    for n in range(len(seqlens)):
        bos, eos = cu[n].item(), cu[n + 1].item()
        o_n = chunk_gated_delta_rule(q[bos:eos], k[bos:eos], v[bos:eos], g[bos:eos], beta[bos:eos], 0.2, ref_states,
                                     cu_seqlens([eos - bos]), i32([SLOTS[n]]), torch.tensor([HAS_INITIAL_STATE[n]]),
                                     True)
        assert rel_rms(o[bos:eos], o_n) < 1e-6
    assert rel_rms(states, ref_states) < 1e-6


@pytest.mark.parametrize("group_chunks", [1, 3])
def test_chunk_gated_delta_rule_chunk_groups(group_chunks, monkeypatch):
    """Long prefills run in groups of chunks; small groups (down to one step per group) change nothing."""
    seqlens, H, HV, K, V = [300, 1, 130, 65, 64], 2, 4, 16, 16
    q, k, v, g, beta, states0 = qkv_g_beta(sum(seqlens), H, HV, K, V, torch.float32)
    args = (cu_seqlens(seqlens), i32(SLOTS[:5]), torch.tensor(HAS_INITIAL_STATE[:5]), True)

    ref_states = states0.clone()
    ref = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, ref_states, *args)
    monkeypatch.setattr(chunk_module, "GROUP_CHUNKS", group_chunks)
    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, states, *args)
    assert rel_rms(o, ref) < 1e-6 and rel_rms(states, ref_states) < 1e-6


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_chunk_gated_delta_rule_padded_entry(state_dtype):
    seqlens, H, HV, K, V = [70, 30, 5], 1, 2, 16, 16
    q, k, v, g, beta, states0 = qkv_g_beta(sum(seqlens), H, HV, K, V, torch.float32, state_dtype=state_dtype)
    cu = cu_seqlens(seqlens)

    states = states0.clone()
    o = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, states, cu, i32([5, -1, 2]), torch.tensor([True, True, False]),
                               True)
    assert torch.equal(o[70:100], torch.zeros(30, HV, V))
    assert_untouched(states, states0, [5, 2])

    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, 0.25, ref_states, cu, i32([5, -1, 2]),
                                           torch.tensor([True, True, False]), True)
    assert rel_rms(o, ref) < 1e-5 and rel_rms(states, ref_states) < state_tol(state_dtype)

    states = states0.clone()
    chunk_gated_delta_rule(q[70:100], k[70:100], v[70:100], g[70:100], beta[70:100], 0.25, states, cu_seqlens([30]),
                           i32([-1]), torch.tensor([True]), True)
    assert torch.equal(states, states0)


@pytest.mark.parametrize("splits", [[100, 200], [1, 63, 64, 172], [130, 1, 169]],
                         ids=lambda s: "split" + "-".join(map(str, s)))
def test_chunk_gated_delta_rule_continued(splits):
    """Calls continued from the previous call's final state equal one call over the concatenation."""
    H, HV, K, V = 2, 4, 32, 32
    T = sum(splits)
    q, k, v, g, beta, states0 = qkv_g_beta(T, H, HV, K, V, torch.float32)
    slot = i32([7])

    whole_states = states0.clone()
    whole = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, whole_states, cu_seqlens([T]), slot, torch.tensor([False]),
                                   True)

    states = states0.clone()
    bos = 0
    for i, n in enumerate(splits):
        eos = bos + n
        o = chunk_gated_delta_rule(q[bos:eos], k[bos:eos], v[bos:eos], g[bos:eos], beta[bos:eos], 0.2, states,
                                   cu_seqlens([n]), slot, torch.tensor([i > 0]), True)
        assert rel_rms(o, whole[bos:eos]) < 1e-5
        bos = eos
    assert rel_rms(states, whole_states) < 1e-5
    assert_untouched(states, states0, [7])


def test_chunk_then_fused_recurrent_decode():
    """Prefill then decode steps equal one prefill over all tokens."""
    H, HV, K, V, T0, steps = 2, 4, 32, 32, 77, 3
    q, k, v, g, beta, states0 = qkv_g_beta(T0 + steps, H, HV, K, V, torch.float32)
    slot = i32([2])

    whole_states = states0.clone()
    whole = chunk_gated_delta_rule(q, k, v, g, beta, 0.2, whole_states, cu_seqlens([T0 + steps]), slot,
                                   torch.tensor([True]), True)
    states = states0.clone()
    chunk_gated_delta_rule(q[:T0], k[:T0], v[:T0], g[:T0], beta[:T0], 0.2, states, cu_seqlens([T0]), slot,
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
                                              f"-V{c[5]}-{dtype_id(c[6])}-state_{dtype_id(c[7])}")
                          for c in RECURRENT_CASES])
@pytest.mark.parametrize("gates", ["random", "g_-20", "beta_near_1"])
def test_fused_recurrent_gated_delta_rule(B, slots, H, HV, K, V, dtype, state_dtype, gates):
    q, k, v, g, beta, states0 = qkv_g_beta(B, H, HV, K, V, dtype, gates, state_dtype=state_dtype)
    state_indices = i32(slots)

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


def verify_inputs(T, H=2, HV=4, K=16, V=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(T, H, K, generator=gen), torch.randn(T, H, K, generator=gen)
    v = torch.randn(T, HV, V, generator=gen)
    g = -torch.rand(T, HV, generator=gen) * 2
    beta = torch.rand(T, HV, generator=gen)
    return q, k, v, g, beta


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_recurrent_gated_delta_rule_verify_matches_naive(state_dtype):
    Q = 3  # 1 + k tokens per sequence
    lens = [Q, Q, 2]
    q, k, v, g, beta = verify_inputs(sum(lens))
    states = torch.randn(12, 4, 16, 8).to(state_dtype)
    slots = i32([[1, 5, 9], [-1, -1, -1], [2, 6, 10]])
    accepted = i32([2, 1, 3])
    ref_states = states.clone()
    out = recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, states, cu_seqlens(lens), slots, accepted, True)
    ref = naive_recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, ref_states, cu_seqlens(lens), slots,
                                                  accepted, True)
    tol = 1e-5 if state_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref.to(out.dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(states.float(), ref_states.float(), rtol=tol, atol=tol)
    assert out[Q:2 * Q].abs().sum() == 0


@pytest.mark.parametrize("a", [1, 2, 3])
def test_recurrent_gated_delta_rule_verify_continues_from_accepted(a):
    """The state written for token a - 1 is the recurrence over the first a tokens."""
    T = 3
    q, k, v, g, beta = verify_inputs(T)
    init = torch.randn(1, 4, 16, 8)
    states = torch.zeros(12, 4, 16, 8)
    states[0] = init[0]
    recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, states, cu_seqlens([T]), i32([[0, 4, 5]]), i32([1]),
                                      True)
    # Slot 0 was read (num_accepted 1 -> column 0); states after tokens 0, 1, 2 in columns 0, 1, 2.
    ref = init.clone()
    naive_recurrent_gated_delta_rule(q[:a], k[:a], v[:a], g[:a], beta[:a], 0.25, ref, cu_seqlens([a]), i32([0]),
                                     torch.ones(1, dtype=torch.bool), True)
    column = [0, 4, 5][a - 1]
    torch.testing.assert_close(states[column], ref[0], rtol=1e-5, atol=1e-5)


def naive_fla_chunk(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
                    state_v_first, cu_seqlens):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule's contract ([1, T, ...] inputs, per-sequence initial and final
    states) on the naive recurrence."""
    N = cu_seqlens.shape[0] - 1
    states = initial_state.transpose(-1, -2).clone() if state_v_first else initial_state.clone()
    o = naive_recurrent_gated_delta_rule(q[0], k[0], v[0], g[0], beta[0], scale, states, cu_seqlens, torch.arange(N),
                                         torch.ones(N, dtype=torch.bool), use_qk_l2norm_in_kernel)
    return o[None], states.transpose(-1, -2) if state_v_first else states


def naive_flashinfer_chunk(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                           use_qk_l2norm_in_kernel):
    """flashinfer.gdn_prefill.chunk_gated_delta_rule's contract ([T, ...] 16-bit q, k, v; alpha = exp(g) and beta
    fp32; states [N, HV, V, K] fp32 per sequence, the final ones returned) on the naive recurrence; our backend
    passes no output_state (FlashInfer's own buffer: not aliased to the initial states)."""
    N = cu_seqlens.shape[0] - 1
    assert q.dtype in (torch.bfloat16, torch.float16) and g.dtype == beta.dtype == torch.float32
    assert initial_state.shape == (N, v.shape[1], v.shape[2], q.shape[2]) and output_final_state
    assert initial_state.dtype == torch.float32
    states = initial_state.transpose(-1, -2).clone()  # [N, HV, K, V]
    o = naive_recurrent_gated_delta_rule(q, k, v, g.log(), beta, scale, states, cu_seqlens, torch.arange(N),
                                         torch.ones(N, dtype=torch.bool), use_qk_l2norm_in_kernel)
    return o, states.transpose(-1, -2).contiguous()


LIBRARY_KERNELS = {"fla": (("fla", "fla.ops", "fla.ops.gated_delta_rule"), naive_fla_chunk),
                   "flashinfer": (("flashinfer", "flashinfer.gdn_prefill"), naive_flashinfer_chunk)}


def check_library_chunk(device, library):
    """A library backend's own work on CPU tensors, its kernel replaced by the naive recurrence on the library's
    documented contract: initial states by slot (a slot without initial state not read), padded sequences (outputs
    zeroed, states dropped), final states back by slot, the library's argument conventions. device "cpu" runs the
    slot kernels' references, "interpret" the slot kernels."""
    from qwen3next_kernels.gated_delta_rule import library_chunk

    modules, naive = LIBRARY_KERNELS[library]
    lib = types.ModuleType(modules[-1])
    lib.chunk_gated_delta_rule = naive
    lens, H, HV, K, V = [20, 7, 30, 5, 9], 1, 2, 16, 16
    q, k, v, g, beta, states0 = qkv_g_beta(sum(lens), H, HV, K, V, torch.bfloat16, S=8)  # fla serves 16-bit inputs
    cu, idx, has_init = prefill_slots(lens, states0, torch.Generator().manual_seed(0))  # has_init False: NaN slots
    unused = next(s for s in range(states0.shape[0]) if s not in idx.tolist())
    with mock.patch.dict(sys.modules, {name: lib for name in modules}):
        for vk, pad in ((False, True), (True, True), (False, False), (True, False)):
            # the cache's memory [S, HV, K, V], or [S, HV, V, K] seen through a transposed view
            idx = idx.clone()
            idx[1] = -1 if pad else unused
            ref_states = states0.clone()
            ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, 0.25, ref_states, cu, idx, has_init, True)
            states = states0.transpose(-1, -2).contiguous().transpose(-1, -2) if vk else states0.clone()
            o = getattr(library_chunk, f"chunk_gated_delta_rule_{library}")(q, k, v, g, beta, 0.25, states, cu, idx,
                                                                           has_init, True)
            assert o.dtype == v.dtype and o.isfinite().all() and rel_rms(o, ref.to(v.dtype)) < 1e-6
            assert_padded_zero(o, cu, idx)
            assert_states(states, ref_states, states0, idx, 1e-6)


@pytest.mark.parametrize("device", ["cpu", "interpret"])
@pytest.mark.parametrize("library", LIBRARY_KERNELS)
def test_chunk_gated_delta_rule_library_gathers_and_scatters_states(run, device, library):
    run(check_library_chunk, device, library)


def test_chunk_gated_delta_rule_libraries_leave_fp32_to_ours(monkeypatch):
    """fp32 activations go to our Triton kernel (fla's dots are tf32 in fp32: the CUDA checks fail it at 1e-4;
    FlashInfer's kernels take 16-bit activations), and fla's one-sequence batches too (its [V, K]-state path is
    slower there, RESULTS_H200.md)."""
    from qwen3next_kernels.gated_delta_rule import library_chunk, triton_chunk

    calls = []
    monkeypatch.setattr(triton_chunk, "chunk_gated_delta_rule_triton", lambda *args: calls.append(args) or "ours")
    q, k, v, g, beta, states = qkv_g_beta(5, 1, 2, 16, 16, torch.float32, S=2)
    args = (cu_seqlens([5]), i32([1]), torch.ones(1, dtype=torch.bool), True)
    assert library_chunk.chunk_gated_delta_rule_fla(q, k, v, g, beta, 0.25, states, *args) == "ours" and len(calls) == 1
    monkeypatch.setitem(sys.modules, "flashinfer.gdn_prefill", None)  # importing it would fail: it must not be reached
    assert library_chunk.chunk_gated_delta_rule_flashinfer(q, k, v, g, beta, 0.25, states, *args) == "ours"
    assert len(calls) == 2
    # and a batch of one sequence, in any dtype (fla's [V, K]-state path is slower there on the H200)
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    assert library_chunk.chunk_gated_delta_rule_fla(q, k, v, g, beta, 0.25, states, *args) == "ours" and len(calls) == 3


FP32, BF16 = torch.float32, torch.bfloat16
CHUNK_SMALL = {
    "fp32-L1-63-64-65": dict(lens=[1, 63, 64, 65], H=1, HV=2, K=16, V=32),
    "bf16": dict(lens=[70, 2, 3], H=1, HV=2, K=16, V=32, dtype=BF16, state_dtype=BF16),
} | {gates: dict(lens=[40], H=1, HV=2, K=16, V=32, gates=gates) for gates in GATES}
# fp32 inputs run the dots as three tf32 passes on the GPU: close to fp32 but not equal
CHUNK_QWEN = {
    "fp32": dict(lens=LENS, H=16, HV=32, K=128, V=128, tol=1e-4),
    "bf16-fp32state": dict(lens=LENS, H=16, HV=32, K=128, V=128, dtype=BF16, tol=2e-2),
    "bf16-bf16state": dict(lens=LENS, H=16, HV=32, K=128, V=128, dtype=BF16, state_dtype=BF16, tol=2e-2),
    "no_l2norm-small_heads": dict(lens=[200, 3, 64], H=2, HV=4, K=32, V=48, use_qk_l2norm=False, tol=1e-4),
} | {gates: dict(lens=[65, 130, 1], H=16, HV=32, K=128, V=128, gates=gates, tol=1e-4) for gates in GATES}


@pytest.mark.parametrize(("device", "case"), on_devices("chunk_gated_delta_rule", CHUNK_SMALL, CHUNK_QWEN))
def test_chunk_gated_delta_rule_devices(run, device, case):
    run(check_chunk_gated_delta_rule, device, **case)


@pytest.mark.parametrize("device", triton_devices("chunk_gated_delta_rule"))
def test_chunk_gated_delta_rule_value_blocks(run, device):
    run(check_chunk_gated_delta_rule, device, [66, 1], 1, 2, 16, 48, use_qk_l2norm=False, BV=16)


RECURRENT_SMALL = {
    "fp32": dict(B=5, H=2, HV=4, K=16, V=64),
    "bf16": dict(B=5, H=2, HV=4, K=16, V=64, dtype=BF16, state_dtype=BF16),
}
RECURRENT_QWEN = {
    "B1-fp32": dict(B=1, H=16, HV=32, K=128, V=128),
    "B64-bf16-fp32state": dict(B=64, H=16, HV=32, K=128, V=128, dtype=BF16),
    "B33-bf16": dict(B=33, H=16, HV=32, K=128, V=128, dtype=BF16, state_dtype=BF16),
}


@pytest.mark.parametrize(("device", "case"),
                         on_devices("fused_recurrent_gated_delta_rule", RECURRENT_SMALL, RECURRENT_QWEN))
def test_fused_recurrent_gated_delta_rule_devices(run, device, case):
    run(check_fused_recurrent_gated_delta_rule, device, **case)


VERIFY_DTYPES = {"fp32": (FP32, FP32), "bf16": (BF16, BF16), "bf16-fp32_state": (BF16, FP32)}
VERIFY_SMALL = {
    f"k{k}-{name}": dict(N=6, k=k, H=1, HV=2, K=16, V=32, dtype=dtype, state_dtype=state_dtype, seed=k)
    for k in (1, 2, 4) for name, (dtype, state_dtype) in VERIFY_DTYPES.items()
} | {gates: dict(N=5, k=2, H=1, HV=2, K=16, V=32, gates=gates) for gates in GATES}
VERIFY_QWEN = {
    f"k{k}-{name}": dict(N=8, k=k, H=16, HV=32, K=128, V=128, dtype=dtype, state_dtype=state_dtype)
    for k in (1, 2, 4) for name, (dtype, state_dtype) in VERIFY_DTYPES.items()
} | {gates: dict(N=8, k=2, H=2, HV=4, K=128, V=128, gates=gates) for gates in GATES}


@pytest.mark.parametrize(("device", "case"),
                         on_devices("recurrent_gated_delta_rule_verify", VERIFY_SMALL, VERIFY_QWEN))
def test_recurrent_gated_delta_rule_verify_devices(run, device, case):
    run(check_recurrent_gated_delta_rule_verify, device, **case)


@pytest.mark.parametrize("device", triton_devices("recurrent_gated_delta_rule_verify"))
def test_recurrent_gated_delta_rule_verify_value_blocks(run, device):
    """The interpreter at one value block of a head, CUDA at several."""
    if device == "interpret":
        run(check_recurrent_gated_delta_rule_verify, device, 4, 3, 2, 4, 16, 48, use_qk_l2norm=False, BV=16)
    else:
        for BV in (16, 32, 128):
            run(check_recurrent_gated_delta_rule_verify, device, 6, 3, 2, 4, 64, 96, use_qk_l2norm=False, BV=BV)


DECODE_SMALL = {
    "fp32": dict(B=4, H=2, HV=4, K=16, V=32),
    "bf16": dict(B=4, H=2, HV=4, K=16, V=32, dtype=BF16, state_dtype=BF16),
}
DECODE_QWEN = {
    "B1-bf16-fp32state": dict(B=1, H=16, HV=32, K=128, V=128, dtype=BF16),
    "B64-bf16": dict(B=64, H=16, HV=32, K=128, V=128, dtype=BF16, state_dtype=BF16),
    "B5-fp32": dict(B=5, H=16, HV=32, K=128, V=128),
    "B256-bf16": dict(B=256, H=16, HV=32, K=128, V=128, dtype=BF16, state_dtype=BF16),  # the state not streamed
}


@pytest.mark.parametrize(("device", "case"), on_devices("gdn_decode", DECODE_SMALL, DECODE_QWEN, cpu=False))
def test_gdn_decode_devices(run, device, case):
    run(check_gdn_decode, device, **case)


@pytest.mark.parametrize(("device", "case"), [
    pytest.param("interpret", dict(B=4, H=2, HV=4, K=16, V=32), id="interpret-small")] + [
    pytest.param(d.values[0], dict(H=16, HV=32, K=128, V=128, graph=graph, **kw),
                 id=f"{d.id}-{name}-{'graph' if graph else 'eager'}", marks=d.marks)
    for d in triton_devices("gdn_decode") if d.values[0] == "cuda:triton"
    for name, kw in [("B1-fp32", dict(B=1)), ("B64-bf16-fp32state", dict(B=64, dtype=BF16))]
    for graph in (False, True)] + [
    pytest.param("interpret", dict(B=4, H=2, HV=4, K=16, V=64, BV=16, num_warps=1), id="interpret-4_blocks")])
def test_gdn_decode_steps(run, device, case):
    """Three decode steps back to back on the same slots; on CUDA eagerly and as one CUDA graph (as vLLM runs
    decode): the two-launch plan with the norm in place (B = 1) and the three-launch one (B = 64, fp32 states);
    in the interpreter at one V block and at four."""
    run(check_gdn_decode, device, **case, steps=3)


@pytest.mark.parametrize(("op", "device"), opcheck_params(["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule",
                                                           "recurrent_gated_delta_rule_verify", "gdn_decode"]))
def test_opcheck(op, device):
    assert_opcheck(op, device)
