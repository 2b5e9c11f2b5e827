"""The whole GDN decode step in one Triton launch (gdn_decode, see ops.py): conv update, gating, l2norm, one
delta-rule step and the gated RMSNorm readout.

Each sequence's state is split over many small programs, as the fastest decode kernels do, so that enough loads are
in flight to run at copy bandwidth; what a key-head group shares (the conv state, the RMSNorm over V) is finished by
the group's last program, found with an atomic counter. G = HV // H.
"""
import torch
import triton
import triton.language as tl

from ..conv.triton import causal_conv1d_update_triton
from ..gating.triton import gdn_gating_triton
from ..norm.triton import gated_rms_norm_triton
from ..utils.triton import (gated_delta_rule_step, gated_rms_norm_apply, l2norm_vec, softplus_gate, state_is_vk,
                            state_offsets, value_blocks)
from .triton_fused_recurrent import fused_recurrent_gated_delta_rule_triton


@triton.jit
def conv_channels(p_x, p_state, weight, bias, o_c, m_c, stride_s_l, W: tl.constexpr, L: tl.constexpr,
                  BW: tl.constexpr, HAS_BIAS: tl.constexpr):
    """SiLU(conv) of the new token on channels o_c ([C]) of one sequence, the state read only. Returns [C] fp32."""
    b_x = tl.load(p_x + o_c, mask=m_c, other=0).to(tl.float32)
    o_w = tl.arange(0, BW)
    b_win = tl.load(p_state + (L - (W - 1) + o_w)[:, None] * stride_s_l + o_c[None, :],
                    mask=(o_w < W - 1)[:, None] & m_c[None, :], other=0)
    b_win = tl.where((o_w == W - 1)[:, None], b_x[None, :], b_win.to(tl.float32))  # [BW, C]
    b_w = tl.load(weight + o_c[None, :] * W + o_w[:, None], mask=(o_w < W)[:, None] & m_c[None, :], other=0)
    b_y = tl.sum(b_win * b_w.to(tl.float32), 0)
    if HAS_BIAS:
        b_y += tl.load(bias + o_c, mask=m_c, other=0).to(tl.float32)
    return b_y * tl.sigmoid(b_y)


@triton.jit
def conv_state_shift(p_x, p_state, o_c, m_c, stride_s_l, L: tl.constexpr, BL: tl.constexpr):
    """Shifts the conv state rows of channels o_c by one and appends the new token."""
    o_l = tl.arange(0, BL)
    b_s = tl.load(p_state + (o_l + 1)[:, None] * stride_s_l + o_c[None, :],
                  mask=(o_l + 1 < L)[:, None] & m_c[None, :], other=0)
    b_x = tl.load(p_x + o_c, mask=m_c, other=0)
    b_s = tl.where((o_l == L - 1)[:, None], b_x[None, :].to(b_s.dtype), b_s)
    tl.debug_barrier()  # every thread has read the old rows before any is overwritten
    tl.store(p_state + o_l[:, None] * stride_s_l + o_c[None, :], b_s.to(p_state.dtype.element_ty),
             mask=(o_l < L)[:, None] & m_c[None, :])


@triton.jit
def gdn_decode_kernel(
    mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, ssm_states,
    state_indices, out, counters, scale, eps,
    stride_x_b, stride_z_b, stride_z_h, stride_a_b, stride_b_b, stride_c_n, stride_c_l, stride_s_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BVF: tl.constexpr, W: tl.constexpr, L: tl.constexpr, BW: tl.constexpr, BL: tl.constexpr,
    HAS_CONV_BIAS: tl.constexpr, USE_L2NORM: tl.constexpr, ROUND_PRODUCT: tl.constexpr, STATE_VK: tl.constexpr,
):
    # One program per (sequence, value head, V block of BV). The G * NV programs of a key head group share conv
    # channels (q, k) and, through the RMSNorm over V, outputs: each reads only, writes its state slice and its
    # unnormalised o, and the last to arrive (atomic counter) shifts the group's conv state and normalises.
    G: tl.constexpr = HV // H
    NV: tl.constexpr = (V + BV - 1) // BV
    i_bhv, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_hv = i_bhv // HV, i_bhv % HV
    i_h = i_hv // G
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    slot = tl.load(state_indices + i_b).to(tl.int64)
    p_out = out + i_b.to(tl.int64) * (HV * V) + i_hv * V
    if slot < 0:
        tl.store(p_out + o_v, tl.zeros([BV], dtype=out.dtype.element_ty), mask=m_v)
        return
    dt = mixed_qkv.dtype.element_ty
    p_x = mixed_qkv + i_b.to(tl.int64) * stride_x_b
    p_c = conv_states + slot * stride_c_n
    # conv outputs are rounded to the activation dtype, as the unfused path stores them
    b_q = conv_channels(p_x, p_c, conv_weight, conv_bias, i_h * K + o_k, m_k, stride_c_l, W, L, BW,
                        HAS_CONV_BIAS).to(dt).to(tl.float32)
    b_k = conv_channels(p_x, p_c, conv_weight, conv_bias, (H + i_h) * K + o_k, m_k, stride_c_l, W, L, BW,
                        HAS_CONV_BIAS).to(dt).to(tl.float32)
    b_v = conv_channels(p_x, p_c, conv_weight, conv_bias, 2 * H * K + i_hv * V + o_v, m_v, stride_c_l, W, L, BW,
                        HAS_CONV_BIAS).to(dt).to(tl.float32)
    b_q = l2norm_vec(b_q, USE_L2NORM) * scale
    b_k = l2norm_vec(b_k, USE_L2NORM)
    b_g = softplus_gate(tl.load(a + i_b * stride_a_b + i_hv), tl.load(A_log + i_hv), tl.load(dt_bias + i_hv))
    b_beta = tl.sigmoid(tl.load(b + i_b * stride_b_b + i_hv).to(tl.float32))
    p_h = ssm_states + slot * stride_s_n + i_hv * K * V + state_offsets(o_k, o_v, K, V, STATE_VK)
    m_h = m_k[:, None] & m_v[None, :]
    b_h = tl.load(p_h, mask=m_h, other=0).to(tl.float32)
    b_h, b_o = gated_delta_rule_step(b_h, b_q, b_k, b_v, b_g, b_beta)
    tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h)
    tl.store(p_out + o_v, b_o.to(out.dtype.element_ty), mask=m_v)

    p_cnt = counters + i_b * H + i_h
    tl.debug_barrier()  # all threads' stores precede the release of the arrival
    if tl.atomic_add(p_cnt, 1, sem="acq_rel") == G * NV - 1:
        o_kk = tl.arange(0, BK)
        conv_state_shift(p_x, p_c, i_h * K + o_kk, o_kk < K, stride_c_l, L, BL)
        conv_state_shift(p_x, p_c, (H + i_h) * K + o_kk, o_kk < K, stride_c_l, L, BL)
        o_f = tl.arange(0, BVF)
        m_f = o_f < V
        b_nw = tl.load(norm_weight + o_f, mask=m_f, other=0).to(tl.float32)
        for j in tl.static_range(G):
            j_hv = i_h * G + j
            conv_state_shift(p_x, p_c, 2 * H * K + j_hv * V + o_f, m_f, stride_c_l, L, BL)
            p_oj = out + i_b.to(tl.int64) * (HV * V) + j_hv * V + o_f
            b_oj = tl.load(p_oj, mask=m_f, other=0, cache_modifier=".cg").to(tl.float32)
            b_z = tl.load(z + i_b * stride_z_b + j_hv * stride_z_h + o_f, mask=m_f, other=0).to(tl.float32)
            b_y = gated_rms_norm_apply(b_oj[None, :], b_z[None, :], b_nw, eps, V, dt, ROUND_PRODUCT)
            tl.store(p_oj[None, :], b_y.to(out.dtype.element_ty), mask=m_f[None, :])
        tl.store(p_cnt, 0)


_COUNTERS: dict = {}


def arrival_counters(n: int, device: torch.device) -> torch.Tensor:
    """Zeroed int32 counters, one per program group, reused across calls (each group's last program resets its
    counter). Allocated on first use: run an op once before capturing it in a CUDA graph."""
    c = _COUNTERS.get(device)
    if c is None or c.numel() < n:
        c = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _COUNTERS[device] = c
    return c


def gdn_decode_triton(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                      norm_eps, scale, ssm_states, state_indices, use_qk_l2norm):
    """Triton gdn_decode (see ops.py): the one-launch kernel for small batches, the four kernels of the base ops for
    large ones, where on the H200 they are faster (kernels/benchmarks/RESULTS_H200.md: the one-launch kernel's
    group-serial tail costs more than three extra launches once B * HV >= COMPOSED_MIN_HEADS)."""
    HV = ssm_states.shape[1]
    fn = gdn_decode_composed_triton if mixed_qkv.shape[0] * HV >= COMPOSED_MIN_HEADS else gdn_decode_fused_triton
    return fn(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, norm_eps, scale,
              ssm_states, state_indices, use_qk_l2norm)


COMPOSED_MIN_HEADS = 1024


def gdn_decode_composed_triton(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                               norm_eps, scale, ssm_states, state_indices, use_qk_l2norm):
    """gdn_decode as four launches: conv update, gating, one recurrence step, gated RMSNorm."""
    B = mixed_qkv.shape[0]
    HV, K, V = ssm_states.shape[1:]
    H = (mixed_qkv.shape[1] - HV * V) // (2 * K)
    x = causal_conv1d_update_triton(mixed_qkv, conv_weight, conv_bias, conv_states, state_indices, True)  # [B, D]
    g, beta = gdn_gating_triton(A_log, a, b, dt_bias)
    o = fused_recurrent_gated_delta_rule_triton(x[:, :H * K].view(B, H, K), x[:, H * K:2 * H * K].view(B, H, K),
                                                x[:, 2 * H * K:].view(B, HV, V), g, beta, scale, ssm_states,
                                                state_indices, use_qk_l2norm)
    return gated_rms_norm_triton(o, z, norm_weight, norm_eps)


def gdn_decode_fused_triton(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                            norm_eps, scale, ssm_states, state_indices, use_qk_l2norm, BV=None, num_warps=None):
    """gdn_decode in one launch. Returns out: [B, HV, V]."""
    B, D = mixed_qkv.shape
    HV, K, V = ssm_states.shape[1:]
    H = (D - HV * V) // (2 * K)
    Dw, W = conv_weight.shape
    L = conv_states.shape[1]
    assert Dw == D == 2 * H * K + HV * V and H > 0 and HV % H == 0, "mixed_qkv must be [B, 2 H K + HV V]"
    assert mixed_qkv.stride(1) == 1 and conv_weight.is_contiguous()
    assert conv_bias is None or (conv_bias.shape == (D,) and conv_bias.is_contiguous())
    assert conv_states.dim() == 3 and conv_states.shape[2] == D and L >= W - 1 and conv_states.stride(2) == 1
    assert z.shape == (B, HV, V) and z.stride(2) == 1
    assert a.shape == (B, HV) and b.shape == (B, HV) and a.stride(1) == 1 and b.stride(1) == 1
    assert A_log.shape == (HV,) and dt_bias.shape == (HV,) and norm_weight.shape == (V,)
    assert A_log.is_contiguous() and dt_bias.is_contiguous() and norm_weight.is_contiguous()
    state_vk = state_is_vk(ssm_states)
    assert state_indices.dtype == torch.int32 and state_indices.shape == (B,) and state_indices.is_contiguous()
    out = torch.empty(B, HV, V, dtype=mixed_qkv.dtype, device=mixed_qkv.device)
    if B == 0:
        return out
    if state_vk and num_warps is None:
        num_warps = 2  # the one-launch kernel at BV = 32: 10-12% faster with 2 warps than 1 on the H200
    BV, num_warps = value_blocks(B * HV, V, BV, num_warps, state_vk)
    round_product = torch.promote_types(norm_weight.dtype, mixed_qkv.dtype) != torch.float32
    gdn_decode_kernel[(B * HV, triton.cdiv(V, BV))](
        mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, ssm_states,
        state_indices, out, arrival_counters(B * H, out.device), scale, norm_eps,
        mixed_qkv.stride(0), z.stride(0), z.stride(1), a.stride(0), b.stride(0), conv_states.stride(0),
        conv_states.stride(1), ssm_states.stride(0),
        H=H, HV=HV, K=K, V=V, BK=triton.next_power_of_2(K), BV=BV, BVF=triton.next_power_of_2(V),
        W=W, L=L, BW=triton.next_power_of_2(W), BL=triton.next_power_of_2(L),
        HAS_CONV_BIAS=conv_bias is not None, USE_L2NORM=use_qk_l2norm, ROUND_PRODUCT=round_product,
        STATE_VK=state_vk, num_warps=num_warps,
    )
    return out
