"""The GDN decode step in Triton (gdn_decode, see ops.py): conv update, gating, l2norm, one delta-rule step and the
gated RMSNorm readout, in one launch or two.

One program per (sequence, value head, V block of BV rows). With the conv fused (FUSE_CONV), a key-head group's
G * NV programs share the q and k conv channels: each reads them, and the last to arrive (atomic counter, G =
HV // H) writes their shifted state from the rows it read; a program's own v channels it shifts itself. With the
whole V in one program (NV = 1) the RMSNorm is applied in place; over several V blocks the group's last program
normalises the group's heads (fused conv), or the caller launches the norm (conv not fused).
"""
import torch
import triton
import triton.language as tl

from ..conv.triton import causal_conv1d_update_triton
from ..norm.triton import gated_rms_norm_triton
from ..utils.triton import (gated_delta_rule_step, gated_rms_norm_apply, head_block_of_program, l2norm_vec,
                            softplus_gate, state_is_vk, state_tile_mask, state_tile_offsets, value_blocks)


@triton.jit
def conv_read(p_x, p_state, weight, bias, o_c, m_c, stride_s_l, W: tl.constexpr, L: tl.constexpr,
              BL: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Channels o_c ([C]) of one sequence: the conv state rows as read ([BL, C]), the new input ([C]) and
    SiLU(conv) of the new token over the state's last W - 1 rows and the input ([C] fp32)."""
    o_l = tl.arange(0, BL)
    m_l = o_l < L
    b_s = tl.load(p_state + o_l[:, None] * stride_s_l + o_c[None, :], mask=m_l[:, None] & m_c[None, :], other=0)
    b_x = tl.load(p_x + o_c, mask=m_c, other=0)
    tap = o_l - (L - (W - 1))  # the conv tap of each state row; < 0: before the window
    b_w = tl.load(weight + o_c[None, :] * W + tap[:, None], mask=(m_l & (tap >= 0))[:, None] & m_c[None, :], other=0)
    b_y = tl.sum(b_s.to(tl.float32) * b_w.to(tl.float32), 0)
    b_y += b_x.to(tl.float32) * tl.load(weight + o_c * W + (W - 1), mask=m_c, other=0).to(tl.float32)
    if HAS_BIAS:
        b_y += tl.load(bias + o_c, mask=m_c, other=0).to(tl.float32)
    return b_s, b_x, b_y * tl.sigmoid(b_y)


@triton.jit
def conv_write_shifted(p_state, b_s, b_x, o_c, m_c, stride_s_l, L: tl.constexpr, BL: tl.constexpr):
    """The new conv state of channels o_c from the rows conv_read returned: row r <- old row r + 1, the last row
    <- the input."""
    o_l = tl.arange(0, BL)
    tl.store(p_state + (o_l - 1)[:, None] * stride_s_l + o_c[None, :], b_s,
             mask=((o_l >= 1) & (o_l < L))[:, None] & m_c[None, :])
    tl.store(p_state + (L - 1) * stride_s_l + o_c, b_x.to(p_state.dtype.element_ty), mask=m_c)


@triton.jit
def gdn_decode_kernel(
    mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, ssm_states,
    state_indices, out, counters, scale, eps,
    stride_x_b, stride_z_b, stride_z_h, stride_a_b, stride_b_b, stride_c_n, stride_c_l, stride_s_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BVF: tl.constexpr, W: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, FUSE_CONV: tl.constexpr,
    HAS_CONV_BIAS: tl.constexpr, USE_L2NORM: tl.constexpr, ROUND_PRODUCT: tl.constexpr, STATE_VK: tl.constexpr,
):
    # mixed_qkv: the pre-conv input with FUSE_CONV, else the conv's output (the conv arguments unused).
    G: tl.constexpr = HV // H
    NV: tl.constexpr = (V + BV - 1) // BV
    i_bhv, i_v = head_block_of_program(NV)
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
    p_h = ssm_states + slot * stride_s_n + i_hv * K * V + state_tile_offsets(o_k, o_v, K, V, STATE_VK)
    m_h = state_tile_mask(m_k, m_v, STATE_VK)
    b_h = tl.load(p_h, mask=m_h, other=0).to(tl.float32)
    p_x = mixed_qkv + i_b.to(tl.int64) * stride_x_b
    o_q, o_kk, o_vv = i_h * K + o_k, (H + i_h) * K + o_k, 2 * H * K + i_hv * V + o_v
    if FUSE_CONV:
        p_c = conv_states + slot * stride_c_n
        s_q, x_q, b_q = conv_read(p_x, p_c, conv_weight, conv_bias, o_q, m_k, stride_c_l, W, L, BL, HAS_CONV_BIAS)
        s_k, x_k, b_k = conv_read(p_x, p_c, conv_weight, conv_bias, o_kk, m_k, stride_c_l, W, L, BL, HAS_CONV_BIAS)
        s_v, x_v, b_v = conv_read(p_x, p_c, conv_weight, conv_bias, o_vv, m_v, stride_c_l, W, L, BL, HAS_CONV_BIAS)
        # conv outputs are rounded to the activation dtype, as the unfused path stores them
        b_q, b_k, b_v = b_q.to(dt).to(tl.float32), b_k.to(dt).to(tl.float32), b_v.to(dt).to(tl.float32)
        tl.debug_barrier()  # every thread has read the rows (the arrival below releases them)
        conv_write_shifted(p_c, s_v, x_v, o_vv, m_v, stride_c_l, L, BL)  # this program's own channels
        p_cnt = counters + i_b * H + i_h
        if NV == 1:  # arrive now: the group's last program writes q, k's state while the others go on
            if tl.atomic_add(p_cnt, 1, sem="acq_rel") == G - 1:
                conv_write_shifted(p_c, s_q, x_q, o_q, m_k, stride_c_l, L, BL)
                conv_write_shifted(p_c, s_k, x_k, o_kk, m_k, stride_c_l, L, BL)
                tl.store(p_cnt, 0)
    else:
        b_q = tl.load(p_x + o_q, mask=m_k, other=0).to(tl.float32)
        b_k = tl.load(p_x + o_kk, mask=m_k, other=0).to(tl.float32)
        b_v = tl.load(p_x + o_vv, mask=m_v, other=0).to(tl.float32)
    b_q = l2norm_vec(b_q, USE_L2NORM) * scale
    b_k = l2norm_vec(b_k, USE_L2NORM)
    b_g = softplus_gate(tl.load(a + i_b * stride_a_b + i_hv), tl.load(A_log + i_hv), tl.load(dt_bias + i_hv))
    b_beta = tl.sigmoid(tl.load(b + i_b * stride_b_b + i_hv).to(tl.float32))
    b_h, b_o = gated_delta_rule_step(b_h, b_q, b_k, b_v, b_g, b_beta, STATE_VK)
    tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h)
    if NV == 1:
        b_z = tl.load(z + i_b * stride_z_b + i_hv * stride_z_h + o_v, mask=m_v, other=0).to(tl.float32)
        b_nw = tl.load(norm_weight + o_v, mask=m_v, other=0).to(tl.float32)
        b_y = gated_rms_norm_apply(b_o[None, :], b_z[None, :], b_nw, eps, V, dt, ROUND_PRODUCT)
        tl.store((p_out + o_v)[None, :], b_y.to(out.dtype.element_ty), mask=m_v[None, :])
    else:
        tl.store(p_out + o_v, b_o.to(out.dtype.element_ty), mask=m_v)
    if FUSE_CONV and NV > 1:  # arrive last: the group's last program shifts q, k and normalises the group's heads
        tl.debug_barrier()  # all threads' stores precede the release of the arrival
        if tl.atomic_add(p_cnt, 1, sem="acq_rel") == G * NV - 1:
            conv_write_shifted(p_c, s_q, x_q, o_q, m_k, stride_c_l, L, BL)
            conv_write_shifted(p_c, s_k, x_k, o_kk, m_k, stride_c_l, L, BL)
            o_f = tl.arange(0, BVF)
            m_f = o_f < V
            b_nw = tl.load(norm_weight + o_f, mask=m_f, other=0).to(tl.float32)
            for j in tl.static_range(G):
                j_hv = i_h * G + j
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


def decode_plan(n_heads: int, state_dtype: torch.dtype) -> tuple[bool, int, int]:
    """(fuse the conv, BV, num_warps) of gdn_decode for n_heads = B * HV state slices laid out [V, K]: measured on
    the H200 (kernels/benchmarks/RESULTS_H200.md)."""
    if n_heads < COMPOSED_MIN_HEADS:
        return True, 32, 2
    return False, 32, 1


COMPOSED_MIN_HEADS = 1024


def gdn_decode_triton(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                      norm_eps, scale, ssm_states, state_indices, use_qk_l2norm):
    """Triton gdn_decode (see ops.py), launched as decode_plan says."""
    fuse_conv, BV, num_warps = decode_plan(mixed_qkv.shape[0] * ssm_states.shape[1], ssm_states.dtype)
    if not state_is_vk(ssm_states):
        BV = num_warps = None  # value_blocks' choice for [K, V] states
    return gdn_decode_launch(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                             norm_eps, scale, ssm_states, state_indices, use_qk_l2norm, fuse_conv, BV, num_warps)


def gdn_decode_fused_triton(*args, BV=None, num_warps=None, **kwargs):
    """gdn_decode in one launch (the conv fused). Returns out: [B, HV, V]."""
    return gdn_decode_launch(*args, **kwargs, fuse_conv=True, BV=BV, num_warps=num_warps)


def gdn_decode_composed_triton(*args, BV=None, num_warps=None, **kwargs):
    """gdn_decode as the conv update, then the rest in one launch (and the norm in a third where BV < V)."""
    return gdn_decode_launch(*args, **kwargs, fuse_conv=False, BV=BV, num_warps=num_warps)


def gdn_decode_launch(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                      norm_eps, scale, ssm_states, state_indices, use_qk_l2norm, fuse_conv, BV=None, num_warps=None):
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
    x = mixed_qkv
    if not fuse_conv:
        x = causal_conv1d_update_triton(mixed_qkv, conv_weight, conv_bias, conv_states, state_indices, True)
    BV, num_warps = value_blocks(B * HV, V, BV, num_warps, state_vk)
    NV = triton.cdiv(V, BV)
    round_product = torch.promote_types(norm_weight.dtype, mixed_qkv.dtype) != torch.float32
    gdn_decode_kernel[(B * HV * NV,)](
        x, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, ssm_states,
        state_indices, out, arrival_counters(B * H, out.device), scale, norm_eps,
        x.stride(0), z.stride(0), z.stride(1), a.stride(0), b.stride(0), conv_states.stride(0),
        conv_states.stride(1), ssm_states.stride(0),
        H=H, HV=HV, K=K, V=V, BK=triton.next_power_of_2(K), BV=BV, BVF=triton.next_power_of_2(V),
        W=W, L=L, BL=triton.next_power_of_2(L), FUSE_CONV=fuse_conv,
        HAS_CONV_BIAS=conv_bias is not None, USE_L2NORM=use_qk_l2norm, ROUND_PRODUCT=round_product,
        STATE_VK=state_vk, num_warps=num_warps,
    )
    if not fuse_conv and NV > 1:
        out = gated_rms_norm_triton(out, z, norm_weight, norm_eps)
    return out
