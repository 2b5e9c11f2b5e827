"""chunk_gated_delta_rule through flash-linear-attention's chunked kernels (fla-core >= 0.6), states by slot.

fla keeps the recurrent state as [N, HV, K, V] per call, our cache's layout, so the only extra work is gathering
the initial states of the sequences that continue one and scattering the final states back by slot.
"""
import torch


def chunk_gated_delta_rule_fla(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state,
                               use_qk_l2norm):
    """Same contract as the CPU op (ops.py). fla's cu_seqlens are int64; padded sequences (slot -1) run on a zero
    state, their outputs are zeroed and their final state dropped."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    N = state_indices.shape[0]
    HV, K, V = ssm_states.shape[1:]
    live = state_indices >= 0
    slots = state_indices.clamp(min=0).long()
    h0 = ssm_states.index_select(0, slots).float()  # [N, HV, K, V]
    h0.mul_((has_initial_state & live).view(N, 1, 1, 1))
    o, ht = chunk_gated_delta_rule(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), g.unsqueeze(0), beta.unsqueeze(0), scale=scale,
        initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
        cu_seqlens=cu_seqlens.long(),
    )
    o = o.squeeze(0)
    if not bool(live.all()):
        token_live = torch.repeat_interleave(live, torch.diff(cu_seqlens.long()), output_size=o.shape[0])
        o = o * token_live.view(-1, 1, 1)
        slots, ht = slots[live], ht[live]
    ssm_states.index_copy_(0, slots, ht.to(ssm_states.dtype))
    return o.to(v.dtype)
