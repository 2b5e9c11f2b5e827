"""chunk_gated_delta_rule through a library's chunked kernels, states by slot: FlashInfer's GDN prefill
(flashinfer-python >= 0.7, Hopper and Blackwell: the built-in's choice there) and flash-linear-attention's
(fla-core >= 0.6).

Both take the initial states of the call per sequence and return the final ones, so the work around the library call
is the same and runs without a host sync (two slot kernels below): gather the initial states of the sequences that
continue one, scatter the final states back by slot, zero the outputs of padded sequences. fla takes [N, HV, K, V]
or, with state_v_first, [N, HV, V, K] (either of our cache layouts); FlashInfer takes [N, HV, V, K] fp32 (the CUDA
cache layout, layers/state.py) and the decay as alpha = exp(g). FlashInfer's state-pool mode (the cache itself and
the slots) is not used: it needs a valid, unique slot per sequence, which padding breaks and which only a host sync
could check (each sync cost more than the gather and scatter it saves). fp32 activations go to our Triton kernel
(tf32x3 dots) on both: fla's dots run in tf32 for fp32 inputs (about 1e-3 off the fp32 reference at the Qwen3-Next
sizes: tests/ops/test_gated_delta_rule.py fails it at 1e-4) and FlashInfer's kernels take 16-bit activations. fla
leaves a batch of one sequence to ours too, where its kernel is slower (1804.5 and 2374.6 against our 1745.7 and
1723.2 us at 1 x 8192 in two runs, RESULTS_H200.md).
"""
import os

import torch
import triton
import triton.language as tl

from ..utils.triton import state_is_vk

BLOCK = 4096  # state elements per program of the slot kernels


@triton.jit
def gather_states_kernel(cache, h0, state_indices, has_initial_state, stride_s, SLOT: tl.constexpr,
                         BLOCK: tl.constexpr):
    """h0[n] = cache[state_indices[n]] in fp32; zero, the slot not read, where sequence n starts fresh or is padding
    (slot -1). SLOT elements per state, contiguous within a slot; slots stride_s apart."""
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    slot = tl.load(state_indices + i_n).to(tl.int64)
    read = (slot >= 0) & (tl.load(has_initial_state + i_n) != 0)
    o = i_b * BLOCK + tl.arange(0, BLOCK)
    b_h = tl.load(cache + tl.maximum(slot, 0) * stride_s + o, mask=o < tl.where(read, SLOT, 0), other=0)
    tl.store(h0 + i_n.to(tl.int64) * SLOT + o, b_h.to(tl.float32), mask=o < SLOT)


@triton.jit
def write_back_kernel(ht, cache, o, cu_seqlens, state_indices, stride_s, SLOT: tl.constexpr, ROW: tl.constexpr,
                      BLOCK: tl.constexpr):
    """cache[state_indices[n]] = ht[n] in the cache's dtype; for a padded sequence (slot -1) the state is dropped and
    its outputs o[bos:eos] (ROW elements a token) are zeroed by the sequence's programs instead."""
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    slot = tl.load(state_indices + i_n).to(tl.int64)
    if slot >= 0:
        p = i_b * BLOCK + tl.arange(0, BLOCK)
        m = p < SLOT
        b_h = tl.load(ht + i_n.to(tl.int64) * SLOT + p, mask=m)
        tl.store(cache + slot * stride_s + p, b_h.to(cache.dtype.element_ty), mask=m)
    else:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        n = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos) * ROW
        step = tl.num_programs(1).to(tl.int64) * BLOCK
        for start in range(i_b.to(tl.int64) * BLOCK, n, step):
            p = start + tl.arange(0, BLOCK)
            tl.store(o + bos * ROW + p, tl.zeros([BLOCK], o.dtype.element_ty), mask=p < n)


def _on_triton(t: torch.Tensor) -> bool:
    """The slot kernels run where Triton can: CUDA tensors, or any under the interpreter (the CPU tests)."""
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _slot_grid(cache, state_indices):
    slot = cache[0].numel()
    assert cache[0].is_contiguous(), "a state slot must be contiguous in the cache's memory layout"
    return slot, (state_indices.shape[0], triton.cdiv(slot, BLOCK))


def _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm):
    from .triton_chunk import chunk_gated_delta_rule_triton

    return chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                         has_initial_state, use_qk_l2norm)


def initial_states(cache, state_indices, has_initial_state):
    """The sequences' initial states [N, ...] in fp32, gathered from the cache (in its memory layout); zero where a
    sequence starts fresh or is padding. No host sync (the slot kernel; on CPU the reference)."""
    if not _on_triton(cache):
        return initial_states_reference(cache, state_indices, has_initial_state)
    slot, grid = _slot_grid(cache, state_indices)
    h0 = torch.empty((state_indices.shape[0], *cache.shape[1:]), device=cache.device, dtype=torch.float32)
    gather_states_kernel[grid](cache, h0, state_indices, has_initial_state.view(torch.uint8), cache.stride(0),
                               SLOT=slot, BLOCK=BLOCK)
    return h0


def write_back(o, ht, cache, cu_seqlens, state_indices):
    """Final states ht [N, ...] (contiguous, the cache's memory layout) to the cache by slot; a padded sequence's
    state dropped and its outputs o [T, HV, V] zeroed in place. No host sync (the slot kernel; on CPU the
    reference)."""
    if not _on_triton(cache):
        return write_back_reference(o, ht, cache, cu_seqlens, state_indices)
    assert ht.is_contiguous() and o.is_contiguous()
    slot, grid = _slot_grid(cache, state_indices)
    write_back_kernel[grid](ht, cache, o, cu_seqlens, state_indices, cache.stride(0), SLOT=slot,
                            ROW=o[0].numel(), BLOCK=BLOCK)


def initial_states_reference(cache, state_indices, has_initial_state):
    N = state_indices.shape[0]
    live = state_indices >= 0
    h0 = cache.index_select(0, state_indices.clamp(min=0).long()).float()
    return h0.masked_fill_(~(has_initial_state & live).view(N, 1, 1, 1), 0)  # not mul_: a slot not read may hold NaN


def write_back_reference(o, ht, cache, cu_seqlens, state_indices):
    live = state_indices >= 0
    token_live = torch.repeat_interleave(live, torch.diff(cu_seqlens.long()), output_size=o.shape[0])
    o.masked_fill_(~token_live.view(-1, 1, 1), 0)
    cache.index_copy_(0, state_indices[live].long(), ht[live].to(cache.dtype))


def chunk_gated_delta_rule_fla(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state,
                               use_qk_l2norm):
    """Same contract as the CPU op (ops.py). Padded sequences (slot -1) run on a zero state; their outputs are zeroed
    and their final states dropped."""
    if q.dtype == torch.float32 or state_indices.shape[0] == 1:
        return _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    state_v_first = state_is_vk(ssm_states)
    cache = ssm_states.transpose(-1, -2) if state_v_first else ssm_states  # the memory's own layout
    h0 = initial_states(cache, state_indices, has_initial_state)  # [N, HV, K, V] or [N, HV, V, K]
    o, ht = chunk_gated_delta_rule(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), g.unsqueeze(0), beta.unsqueeze(0), scale=scale,
        initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
        state_v_first=state_v_first, cu_seqlens=cu_seqlens.long(),
    )
    o = o.squeeze(0).to(v.dtype)
    write_back(o, ht.contiguous(), cache, cu_seqlens, state_indices)
    return o


def chunk_gated_delta_rule_flashinfer(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                      has_initial_state, use_qk_l2norm):
    """Same contract as the CPU op (ops.py), padded sequences as in chunk_gated_delta_rule_fla."""
    if q.dtype == torch.float32:
        return _ours(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm)
    from flashinfer.gdn_prefill import chunk_gated_delta_rule

    state_v_first = state_is_vk(ssm_states)
    cache = ssm_states.transpose(-1, -2) if state_v_first else ssm_states  # the memory's own layout
    h0 = initial_states(cache, state_indices, has_initial_state)
    if not state_v_first:  # FlashInfer's states are [N, HV, V, K]
        h0 = h0.transpose(-1, -2).contiguous()
    o, ht = chunk_gated_delta_rule(
        q.contiguous(), k.contiguous(), v.contiguous(), g=g.float().exp(), beta=beta.float().contiguous(),
        scale=scale, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm,
    )  # output_state not aliased to h0: its context-parallel path (long sequences) may read h0 after a write
    if not state_v_first:
        ht = ht.transpose(-1, -2).contiguous()
    o = o.to(v.dtype)
    write_back(o, ht, cache, cu_seqlens, state_indices)
    return o
