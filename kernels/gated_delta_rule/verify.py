"""recurrent_gated_delta_rule_verify on CPU (the scheme: see ops.py), vectorised over the sequences of each length
(a verification batch usually has one: k + 1)."""
import torch

from ..utils.cpu import l2norm, sequences_by_length


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
