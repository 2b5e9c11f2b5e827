"""Speculative-verification ops against their token-by-token references, and the
property vLLM relies on: after accepting a of the Q tokens, the next step continues
exactly as if only those a tokens had been decoded.

T = total tokens, N = sequences, S = state slots, D = conv channels, W = conv width,
L = conv state length (W - 1 + k), H / HV = key / value heads, K / V = head dims, C = slots per sequence.
"""
import pytest
import torch

from qwen3next_kernels.conv import causal_conv1d_verify, naive_causal_conv1d_fwd, naive_causal_conv1d_verify
from qwen3next_kernels.gated_delta_rule import (naive_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule_verify,
                                                recurrent_gated_delta_rule_verify)

NUM_SLOTS = 12
I32 = dict(dtype=torch.int32)


def cu(lens):
    return torch.tensor([0] + list(lens), **I32).cumsum(0, dtype=torch.int32)


@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
def test_causal_conv1d_verify_matches_naive(k):
    D, W = 24, 4
    L = W - 1 + k
    lens = [k + 1, k + 1, 1]
    slots = torch.tensor([7, -1, 3], **I32)
    accepted = torch.tensor([k + 1, 1, 1], **I32)
    x = torch.randn(sum(lens), D)
    weight, states = torch.randn(D, W), torch.randn(NUM_SLOTS, L, D)
    ref_states = states.clone()
    out = causal_conv1d_verify(x, weight, None, states, cu(lens), slots, accepted, True)
    ref = naive_causal_conv1d_verify(x, weight, None, ref_states, cu(lens), slots, accepted, True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, ref_states)
    assert out[k + 1:2 * k + 2].abs().sum() == 0  # padded sequence: zeros


@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("accept", ["none", "some", "all"])
def test_causal_conv1d_verify_continues_from_accepted(k, accept):
    """Prefill, verify Q = k + 1 tokens, accept a of them, verify again: the second
    step's outputs equal a plain causal conv over prompt + accepted + new tokens."""
    D, W = 16, 4
    L = W - 1 + k
    a = {"none": 1, "some": max(1, k // 2 + 1), "all": k + 1}[accept]
    prompt, step1, step2 = torch.randn(9, D), torch.randn(k + 1, D), torch.randn(k + 1, D)
    weight = torch.randn(D, W)
    states = torch.zeros(NUM_SLOTS, L, D)
    slot = torch.tensor([4], **I32)
    one = torch.ones(1, **I32)
    # Prefill writes the window to rows [0, W - 1) (vLLM's non-speculative layout).
    window = states[:, : W - 1]
    naive_causal_conv1d_fwd(prompt, weight, None, window, cu([9]), slot, torch.zeros(1, dtype=torch.bool), True)
    causal_conv1d_verify(step1, weight, None, states, cu([k + 1]), slot, one, True)
    out = causal_conv1d_verify(step2, weight, None, states, cu([k + 1]), slot, torch.tensor([a], **I32), True)
    history = torch.cat([prompt, step1[:a], step2])
    full = naive_causal_conv1d_fwd(history, weight, None, torch.zeros(1, W - 1, D), cu([len(history)]),
                                   torch.zeros(1, **I32), torch.zeros(1, dtype=torch.bool), True)
    torch.testing.assert_close(out, full[-(k + 1):], rtol=1e-5, atol=1e-5)


def _gdr_inputs(T, H=2, HV=4, K=16, V=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(T, H, K, generator=gen), torch.randn(T, H, K, generator=gen)
    v = torch.randn(T, HV, V, generator=gen)
    g = -torch.rand(T, HV, generator=gen) * 2
    beta = torch.rand(T, HV, generator=gen)
    return q, k, v, g, beta


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_recurrent_verify_matches_naive(state_dtype):
    kq = 3  # 1 + k tokens per sequence
    lens = [kq, kq, 2]
    q, k, v, g, beta = _gdr_inputs(sum(lens))
    states = torch.randn(NUM_SLOTS, 4, 16, 8).to(state_dtype)
    slots = torch.tensor([[1, 5, 9], [-1, -1, -1], [2, 6, 10]], **I32)
    accepted = torch.tensor([2, 1, 3], **I32)
    ref_states = states.clone()
    out = recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, states, cu(lens), slots, accepted, True)
    ref = naive_recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, ref_states, cu(lens), slots, accepted,
                                                  True)
    tol = 1e-5 if state_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref.to(out.dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(states.float(), ref_states.float(), rtol=tol, atol=tol)
    assert out[kq:2 * kq].abs().sum() == 0


@pytest.mark.parametrize("a", [1, 2, 3])
def test_recurrent_verify_continues_from_accepted(a):
    """The state written for token a - 1 is the recurrence over the first a tokens."""
    T = 3
    q, k, v, g, beta = _gdr_inputs(T)
    init = torch.randn(1, 4, 16, 8)
    states = torch.zeros(NUM_SLOTS, 4, 16, 8)
    states[0] = init[0]
    recurrent_gated_delta_rule_verify(q, k, v, g, beta, 0.25, states, cu([T]), torch.tensor([[0, 4, 5]], **I32),
                                      torch.ones(1, **I32), True)
    # Slot 0 was read (num_accepted 1 -> column 0); states after tokens 0, 1, 2 in columns 0, 1, 2.
    ref = init.clone()
    naive_recurrent_gated_delta_rule(q[:a], k[:a], v[:a], g[:a], beta[:a], 0.25, ref, cu([a]),
                                     torch.zeros(1, **I32), torch.ones(1, dtype=torch.bool), True)
    column = [0, 4, 5][a - 1]
    torch.testing.assert_close(states[column], ref[0], rtol=1e-5, atol=1e-5)


def test_verify_ops_opcheck():
    D, W, L = 8, 4, 5
    x, weight, states = torch.randn(4, D), torch.randn(D, W), torch.randn(NUM_SLOTS, L, D)
    torch.library.opcheck(causal_conv1d_verify, (x, weight, None, states, cu([3, 1]), torch.tensor([2, 5], **I32),
                                                 torch.tensor([2, 1], **I32), True))
    q, k, v, g, beta = _gdr_inputs(4)
    ssm = torch.randn(NUM_SLOTS, 4, 16, 8)
    torch.library.opcheck(recurrent_gated_delta_rule_verify,
                          (q, k, v, g, beta, 0.25, ssm, cu([3, 1]), torch.tensor([[1, 2, 3], [4, 5, 6]], **I32),
                           torch.tensor([2, 1], **I32), True))
