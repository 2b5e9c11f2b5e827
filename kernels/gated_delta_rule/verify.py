"""Gated delta rule for speculative verification: Q tokens per sequence, one state slot per token.

T = total tokens, N = sequences, S = state slots, H / HV = key / value heads, K / V = head dims,
Q = tokens of one sequence, C = state slots per sequence (>= Q, k + 1 for k speculative tokens).

vLLM's scheme: the sequence starts from the state in ``state_indices[n, a - 1]`` (a = tokens accepted
at the last step) and the state after its token t is written to ``state_indices[n, t]``, so the next
step can start from whichever token is accepted. A slot index of -1 skips the sequence (or the write).
"""
import torch

from .naive import naive_recurrent_gated_delta_rule
from ..varlen import sequences_by_length
from .utils import l2norm


def naive_recurrent_gated_delta_rule_verify(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                            num_accepted, use_qk_l2norm):
    """Token by token on top of the naive recurrence. Returns o [T, HV, V] fp32; mutates ssm_states."""
    o = torch.zeros(v.shape)
    for n in range(state_indices.shape[0]):
        slots = state_indices[n]
        if int(slots[0]) < 0:
            continue
        state = ssm_states[int(slots[int(num_accepted[n]) - 1])].clone()
        for t in range(int(cu_seqlens[n]), int(cu_seqlens[n + 1])):
            cache = state[None].clone()
            one = torch.tensor([0, 1], dtype=torch.int32)
            o[t:t + 1] = naive_recurrent_gated_delta_rule(
                q[t:t + 1], k[t:t + 1], v[t:t + 1], g[t:t + 1], beta[t:t + 1], scale, cache, one,
                torch.zeros(1, dtype=torch.int32), torch.ones(1, dtype=torch.bool), use_qk_l2norm)
            state = cache[0]
            ssm_states[int(slots[t - int(cu_seqlens[n])])] = state
    return o


def recurrent_gated_delta_rule_verify_cpu(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                          num_accepted, use_qk_l2norm):
    """Vectorised over the sequences of each length (a verification batch usually has one: k + 1)."""
    T, H, K = q.shape
    HV, V = v.shape[1:]
    N, C = state_indices.shape
    assert ssm_states.shape[1:] == (HV, K, V) and HV % H == 0 and cu_seqlens.shape == (N + 1,)
    G = HV // H
    q, k = q.float(), k.float()
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q = (q * scale).repeat_interleave(G, 1)  # [T, HV, K]: value head j reads key head j // G
    k = k.repeat_interleave(G, 1)
    decay, beta = g.float().exp(), beta.float()  # [T, HV]
    o = torch.zeros(T, HV, V, dtype=v.dtype)
    cu = cu_seqlens.tolist()
    slots, accepted = state_indices.long(), num_accepted.long()
    for Q, (seqs, tokens) in sequences_by_length(cu, state_indices[:, 0]).items():
        assert Q <= C, f"{Q} tokens need {Q} state slots, the row has {C}"
        rows = slots[seqs]  # [N', C]
        state = ssm_states[rows.gather(1, accepted[seqs, None] - 1)[:, 0]].float()  # [N', HV, K, V]
        for i in range(Q):
            t = tokens[:, i]
            state.mul_(decay[t, :, None, None])
            v_new = beta[t, :, None] * (v[t].float() - torch.einsum("nhkv,nhk->nhv", state, k[t]))
            state.add_(k[t, :, :, None] * v_new[:, :, None, :])
            o[t] = torch.einsum("nhkv,nhk->nhv", state, q[t]).to(o.dtype)
            write = rows[:, i] >= 0
            ssm_states[rows[write, i]] = state[write].to(ssm_states.dtype)
    return o


@torch.library.custom_op("qwen3next::recurrent_gated_delta_rule_verify", mutates_args=("ssm_states",),
                         device_types="cpu")
def recurrent_gated_delta_rule_verify(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                      beta: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                                      cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                                      num_accepted: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
    """Recurrence over Q tokens per sequence, keeping the state after every token (verification).

    Args:
        q, k: [T, H, K]. v: [T, HV, V]. g, beta: [T, HV] fp32.
        ssm_states: [S, HV, K, V], mutated. cu_seqlens: [N+1] int32.
        state_indices: [N, C] int32 (row n: the slots of sequence n; -1 in column 0 skips it).
        num_accepted: [N] int32 (>= 1): the state to start from is state_indices[n, num_accepted[n] - 1].
    Returns:
        o: [T, HV, V] in v.dtype.
    """
    return recurrent_gated_delta_rule_verify_cpu(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                                 num_accepted, use_qk_l2norm)


@recurrent_gated_delta_rule_verify.register_fake
def _(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, num_accepted, use_qk_l2norm):
    return v.new_empty(v.shape)
