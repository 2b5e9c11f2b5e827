"""chunk_gated_delta_rule through flash-linear-attention's chunked kernels (fla-core >= 0.6), states by slot.

fla takes the initial states of the call as [N, HV, K, V] or, with state_v_first, [N, HV, V, K]: either of our
cache layouts, so the only extra work is gathering the initial states of the sequences that continue one and
scattering the final states back by slot. fla's dots run in tf32 for fp32 inputs (about 1e-3 off the fp32
reference at the Qwen3-Next sizes: tests/ops/test_gated_delta_rule.py fails it at 1e-4), so fp32 activations go to our
Triton kernel (tf32x3 dots); fla serves 16-bit activations, where it is the faster (RESULTS_H200.md), except for a
batch of one sequence, where fla's [V, K]-state path is slower than ours (2551 against 1745 us at 1 x 8192).
"""
import torch

from ..utils.triton import state_is_vk


def chunk_gated_delta_rule_fla(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state,
                               use_qk_l2norm):
    """Same contract as the CPU op (ops.py). Padded sequences (slot -1) run on a zero state; their outputs are zeroed
    and their final states dropped."""
    if q.dtype == torch.float32 or state_indices.shape[0] == 1:
        from .triton_chunk import chunk_gated_delta_rule_triton

        return chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                             has_initial_state, use_qk_l2norm)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    N = state_indices.shape[0]
    state_v_first = state_is_vk(ssm_states)
    cache = ssm_states.transpose(-1, -2) if state_v_first else ssm_states  # the memory's own layout, contiguous
    live = state_indices >= 0
    slots = state_indices.clamp(min=0).long()
    h0 = cache.index_select(0, slots).float()  # [N, HV, K, V] or [N, HV, V, K]
    h0.masked_fill_(~(has_initial_state & live).view(N, 1, 1, 1), 0)  # not mul_: a slot not read may hold NaN
    o, ht = chunk_gated_delta_rule(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), g.unsqueeze(0), beta.unsqueeze(0), scale=scale,
        initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
        state_v_first=state_v_first, cu_seqlens=cu_seqlens.long(),
    )
    o = o.squeeze(0)
    if not bool(live.all()):
        token_live = torch.repeat_interleave(live, torch.diff(cu_seqlens.long()), output_size=o.shape[0])
        o = o * token_live.view(-1, 1, 1)
        slots, ht = slots[live], ht[live]
    cache.index_copy_(0, slots, ht.to(cache.dtype))
    return o.to(v.dtype)
