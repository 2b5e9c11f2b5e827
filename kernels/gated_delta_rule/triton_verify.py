"""Recurrent gated delta rule for speculative verification in Triton: Q tokens per sequence, the state after every
token written to its own slot.

The scheme (see ops.py): sequence n starts from the state in slot state_indices[n, a - 1] (a = num_accepted[n])
and writes its state after token i to slot state_indices[n, i]. One program per (sequence, value head, V block of
BV) keeps its slice of the state (BV rows of V) in registers over the Q tokens; the slices are disjoint, and the slice of
the slot read first is overwritten (if at all) by the same program, after the read.
"""
import torch
import triton
import triton.language as tl

from ..utils.triton import (gated_delta_rule_step, head_block_of_program, l2norm_vec, state_is_vk, state_tile_mask,
                            state_tile_offsets, value_blocks)


@triton.jit
def recurrent_gated_delta_rule_verify_kernel(
    q, k, v, g, beta, o, ssm_states, cu_seqlens, state_indices, num_accepted, scale,
    C, stride_q_t, stride_k_t, stride_v_t, stride_g_t, stride_b_t, stride_s_n, stride_i_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, STATE_VK: tl.constexpr,
):
    i_nh, i_v = head_block_of_program((V + BV - 1) // BV)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_h = state_tile_mask(m_k, m_v, STATE_VK)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    p_o = o + bos * (HV * V) + i_hv * V + o_v  # token bos; token bos + i at + i * HV * V
    p_slots = state_indices + i_n.to(tl.int64) * stride_i_n
    if tl.load(p_slots) < 0:
        for i in range(0, eos - bos):
            tl.store(p_o + i * (HV * V), tl.zeros([BV], dtype=o.dtype.element_ty), mask=m_v)
        return
    p_hv = ssm_states + i_hv * K * V + state_tile_offsets(o_k, o_v, K, V, STATE_VK)  # the slice in slot 0
    # The initial state: column a - 1. A column outside [0, C) or a -1 there (outside the contract) starts from zeros.
    i_c = tl.load(num_accepted + i_n) - 1
    r_slot = tl.load(p_slots + i_c, mask=(i_c >= 0) & (i_c < C), other=-1).to(tl.int64)
    b_h = tl.load(p_hv + tl.maximum(r_slot, 0) * stride_s_n, mask=m_h, other=0).to(tl.float32)
    b_h = tl.where(r_slot >= 0, b_h, 0.0)
    for i in range(0, eos - bos):
        t = bos + i
        b_q = tl.load(q + t * stride_q_t + i_h * K + o_k, mask=m_k, other=0).to(tl.float32)
        b_k = tl.load(k + t * stride_k_t + i_h * K + o_k, mask=m_k, other=0).to(tl.float32)
        b_v = tl.load(v + t * stride_v_t + i_hv * V + o_v, mask=m_v, other=0).to(tl.float32)
        b_g = tl.load(g + t * stride_g_t + i_hv)
        b_beta = tl.load(beta + t * stride_b_t + i_hv)
        b_h, b_o = gated_delta_rule_step(b_h, l2norm_vec(b_q, USE_L2NORM) * scale, l2norm_vec(b_k, USE_L2NORM), b_v,
                                         b_g, b_beta, STATE_VK)
        tl.store(p_o + i * (HV * V), b_o.to(o.dtype.element_ty), mask=m_v)
        w_slot = tl.load(p_slots + i, mask=i < C, other=-1).to(tl.int64)  # -1 (or a column past C): no write
        if w_slot >= 0:
            tl.store(p_hv + w_slot * stride_s_n, b_h.to(ssm_states.dtype.element_ty), mask=m_h)


def recurrent_gated_delta_rule_verify_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                             num_accepted, use_qk_l2norm, BV=None, num_warps=None):
    """Triton recurrent_gated_delta_rule_verify; same contract as the CPU op (see ops.py).

    q, k: [T, H, K], v: [T, HV, V] (row-strided views allowed), g, beta: [T, HV] fp32, ssm_states: [S, HV, K, V]
    (mutated; fp32 or bf16), cu_seqlens: [N+1] int32, state_indices: [N, C] int32, num_accepted: [N] int32.
    Returns o: [T, HV, V] in v.dtype. Math in fp32, the state kept in fp32 across the tokens of a sequence.
    """
    T, H, K = q.shape
    HV, V = v.shape[1:]
    N, C = state_indices.shape
    assert k.shape == (T, H, K) and v.shape[0] == T and HV % H == 0
    assert g.shape == (T, HV) and beta.shape == (T, HV) and g.dtype == beta.dtype == torch.float32
    assert q.stride()[1:] == (K, 1) and k.stride()[1:] == (K, 1) and v.stride()[1:] == (V, 1)
    assert g.stride(1) == 1 and beta.stride(1) == 1
    assert ssm_states.dim() == 4 and ssm_states.shape[1:] == (HV, K, V)
    state_vk = state_is_vk(ssm_states)
    assert state_indices.dtype == torch.int32 and state_indices.stride(1) == 1
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.shape == (N + 1,) and cu_seqlens.is_contiguous()
    assert num_accepted.dtype == torch.int32 and num_accepted.shape == (N,) and num_accepted.is_contiguous()
    devices = {t.device for t in (q, k, v, g, beta, ssm_states, cu_seqlens, state_indices, num_accepted)}
    assert len(devices) == 1, f"all tensors must be on one device, got {devices}"
    o = torch.empty(T, HV, V, dtype=v.dtype, device=v.device)
    if T == 0 or N == 0:
        return o
    if BV is None and state_vk:
        BV = 16  # 1.04-1.07x faster than 32 rows on the H200, fp32 and bf16 states (RESULTS_H200.md)
    BV, num_warps = value_blocks(N * HV, V, BV, num_warps, state_vk)
    recurrent_gated_delta_rule_verify_kernel[(N * HV * triton.cdiv(V, BV),)](
        q, k, v, g, beta, o, ssm_states, cu_seqlens, state_indices, num_accepted, scale,
        C, q.stride(0), k.stride(0), v.stride(0), g.stride(0), beta.stride(0), ssm_states.stride(0),
        state_indices.stride(0),
        H=H, HV=HV, K=K, V=V, BK=triton.next_power_of_2(K), BV=BV, USE_L2NORM=use_qk_l2norm,
        STATE_VK=state_vk,
        num_warps=num_warps,
    )
    return o

