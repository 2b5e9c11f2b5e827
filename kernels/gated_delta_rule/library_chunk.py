"""chunk_gated_delta_rule through a library's chunked kernels, states by slot: FlashInfer's GDN prefill
(flashinfer-python >= 0.7, Hopper and Blackwell: the built-in's choice there) and flash-linear-attention's
(fla-core >= 0.6).

Both take the initial states of the call per sequence and return the final ones, so the work around the library call
is the same: gather the initial states of the sequences that continue one, scatter the final states back by slot,
zero the outputs of padded sequences. fla takes [N, HV, K, V] or, with state_v_first, [N, HV, V, K] (either of our
cache layouts); FlashInfer takes [N, HV, V, K] fp32 (the CUDA cache layout, layers/state.py) and the decay as
alpha = exp(g), or, in its state-pool mode, the [V, K] cache itself and the slots (used when no sequence is padding:
no gather or scatter, 1.1-1.4x faster than the gathered call at 16 x 2048 and 64 x 512, RESULTS_H200.md). fp32 activations go to our Triton kernel (tf32x3 dots) on both: fla's dots run in tf32 for fp32
inputs (about 1e-3 off the fp32 reference at the Qwen3-Next sizes: tests/ops/test_gated_delta_rule.py fails it at
1e-4) and FlashInfer's kernels take 16-bit activations. fla leaves a batch of one sequence to ours too, where its
[V, K]-state path is slower (2551 against 1745 us at 1 x 8192, RESULTS_H200.md).
"""
import torch

from ..utils.triton import state_is_vk


def _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm):
    from .triton_chunk import chunk_gated_delta_rule_triton

    return chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                         has_initial_state, use_qk_l2norm)


def _initial_states(cache, state_indices, has_initial_state):
    """The sequences' initial states in fp32, gathered from the cache (in its memory layout); zero where a sequence
    starts fresh or is padding. Returns (h0, live, slots)."""
    N = state_indices.shape[0]
    live = state_indices >= 0
    slots = state_indices.clamp(min=0).long()
    h0 = cache.index_select(0, slots).float()
    h0.masked_fill_(~(has_initial_state & live).view(N, 1, 1, 1), 0)  # not mul_: a slot not read may hold NaN
    return h0, live, slots


def _write_back(o, ht, cache, cu_seqlens, live, slots, dtype):
    """Final states to the cache by slot (padded sequences dropped, their outputs zeroed); returns o in dtype."""
    if not bool(live.all()):
        token_live = torch.repeat_interleave(live, torch.diff(cu_seqlens.long()), output_size=o.shape[0])
        o = o * token_live.view(-1, 1, 1)
        slots, ht = slots[live], ht[live]
    cache.index_copy_(0, slots, ht.to(cache.dtype))
    return o.to(dtype)


def chunk_gated_delta_rule_fla(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state,
                               use_qk_l2norm):
    """Same contract as the CPU op (ops.py). Padded sequences (slot -1) run on a zero state; their outputs are zeroed
    and their final states dropped."""
    if q.dtype == torch.float32 or state_indices.shape[0] == 1:
        return _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    state_v_first = state_is_vk(ssm_states)
    cache = ssm_states.transpose(-1, -2) if state_v_first else ssm_states  # the memory's own layout, contiguous
    h0, live, slots = _initial_states(cache, state_indices, has_initial_state)  # [N, HV, K, V] or [N, HV, V, K]
    o, ht = chunk_gated_delta_rule(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), g.unsqueeze(0), beta.unsqueeze(0), scale=scale,
        initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
        state_v_first=state_v_first, cu_seqlens=cu_seqlens.long(),
    )
    return _write_back(o.squeeze(0), ht, cache, cu_seqlens, live, slots, v.dtype)


def chunk_gated_delta_rule_flashinfer(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                      has_initial_state, use_qk_l2norm):
    """Same contract as the CPU op (ops.py), padded sequences as in chunk_gated_delta_rule_fla."""
    if q.dtype == torch.float32:
        return _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm)
    from flashinfer.gdn_prefill import chunk_gated_delta_rule

    state_v_first = state_is_vk(ssm_states)
    cache = ssm_states.transpose(-1, -2) if state_v_first else ssm_states  # the memory's own layout, contiguous
    alpha, beta = g.float().exp(), beta.float().contiguous()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if state_v_first and bool((state_indices >= 0).all()):
        # FlashInfer's state-pool mode: each sequence reads and writes its slot of the cache in place (no gather or
        # scatter); a sequence that starts fresh has its slot zeroed first
        fresh = state_indices[~has_initial_state].long()
        if fresh.numel():
            cache.index_fill_(0, fresh, 0)
        o, _ = chunk_gated_delta_rule(
            q, k, v, g=alpha, beta=beta, scale=scale, initial_state=cache, output_final_state=True,
            cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm, output_state=cache,
            state_indices=state_indices,
        )
        return o.to(v.dtype)
    h0, live, slots = _initial_states(cache, state_indices, has_initial_state)
    if not state_v_first:  # FlashInfer's states are [N, HV, V, K]
        h0 = h0.transpose(-1, -2).contiguous()
    o, ht = chunk_gated_delta_rule(
        q, k, v, g=alpha, beta=beta, scale=scale, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm, output_state=torch.empty_like(h0),
    )
    if not state_v_first:
        ht = ht.transpose(-1, -2)
    return _write_back(o, ht, cache, cu_seqlens, live, slots, v.dtype)
