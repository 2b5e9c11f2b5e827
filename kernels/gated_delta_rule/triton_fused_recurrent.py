"""One recurrent gated delta rule step per sequence (decode) in Triton, the state read and written in place by slot."""
import torch
import triton
import triton.language as tl

from ..utils.triton import (gated_delta_rule_step, head_block_of_program, l2norm_vec, state_is_vk, state_tile_mask,
                            state_tile_offsets, value_blocks)


@triton.jit
def fused_recurrent_gated_delta_rule_fwd_kernel(
    q, k, v, g, beta, o, ssm_states, state_indices, scale,
    stride_q_b, stride_k_b, stride_v_b, stride_g_b, stride_b_b, stride_s_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, STATE_VK: tl.constexpr,
):
    i_bh, i_v = head_block_of_program((V + BV - 1) // BV)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_o = o + i_b.to(tl.int64) * (HV * V) + i_hv * V + o_v
    slot = tl.load(state_indices + i_b).to(tl.int64)
    if slot < 0:
        tl.store(p_o, tl.zeros([BV], dtype=o.dtype.element_ty), mask=m_v)
        return
    p_h = ssm_states + slot * stride_s_n + i_hv * K * V + state_tile_offsets(o_k, o_v, K, V, STATE_VK)
    m_h = state_tile_mask(m_k, m_v, STATE_VK)
    b_h = tl.load(p_h, mask=m_h, other=0).to(tl.float32)
    b_q = l2norm_vec(tl.load(q + i_b * stride_q_b + i_h * K + o_k, mask=m_k, other=0).to(tl.float32), USE_L2NORM)
    b_k = l2norm_vec(tl.load(k + i_b * stride_k_b + i_h * K + o_k, mask=m_k, other=0).to(tl.float32), USE_L2NORM)
    b_v = tl.load(v + i_b * stride_v_b + i_hv * V + o_v, mask=m_v, other=0).to(tl.float32)
    b_g = tl.load(g + i_b * stride_g_b + i_hv)
    b_beta = tl.load(beta + i_b * stride_b_b + i_hv)
    b_h, b_o = gated_delta_rule_step(b_h, b_q * scale, b_k, b_v, b_g, b_beta, STATE_VK)
    tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_v)
    tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h)


def fused_recurrent_gated_delta_rule_triton(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm,
                                            BV=None, num_warps=None):
    """Triton fused_recurrent_gated_delta_rule; same contract as the CPU op (see ops.py). Returns o: [B, HV, V]."""
    B, H, K = q.shape
    HV, V = v.shape[1:]
    assert k.shape == (B, H, K) and v.shape[0] == B and HV % H == 0
    assert g.shape == (B, HV) and beta.shape == (B, HV) and g.dtype == beta.dtype == torch.float32
    assert q.stride()[1:] == (K, 1) and k.stride()[1:] == (K, 1) and v.stride()[1:] == (V, 1)
    assert g.stride(1) == 1 and beta.stride(1) == 1
    assert ssm_states.dim() == 4 and ssm_states.shape[1:] == (HV, K, V)
    state_vk = state_is_vk(ssm_states)
    assert state_indices.dtype == torch.int32 and state_indices.shape == (B,) and state_indices.is_contiguous()
    o = torch.empty(B, HV, V, dtype=v.dtype, device=v.device)
    if B == 0:
        return o
    BK = triton.next_power_of_2(K)
    BV, num_warps = value_blocks(B * HV, V, BV, num_warps, state_vk)
    fused_recurrent_gated_delta_rule_fwd_kernel[(B * HV * triton.cdiv(V, BV),)](
        q, k, v, g, beta, o, ssm_states, state_indices, scale,
        q.stride(0), k.stride(0), v.stride(0), g.stride(0), beta.stride(0), ssm_states.stride(0),
        H=H, HV=HV, K=K, V=V, BK=BK, BV=BV, USE_L2NORM=use_qk_l2norm, STATE_VK=state_vk,
        num_warps=num_warps,
    )
    return o

