"""The GDN decode step in Triton (gdn_decode, see ops.py) as two launches: the conv update, then gating, l2norm,
one delta-rule step and, where one program holds a head's whole V (BV = V), the gated RMSNorm; over several V
blocks the norm is a third launch.

Measured on the H200 and removed (kernels/benchmarks/RESULTS_H200.md): a one-launch variant that fused the conv
(the q, k conv state shared by a key-head group, written by the group's last program), slower at every batch size;
the norm over several V blocks applied by each head's last block to finish (found by a counter), 2-16% slower at
B >= 32; launching the three kernels with programmatic dependent launch, slower at B = 1 (the one batch size
measured with the same plan: 11.1 against 8.1 us with fp32 states).
"""
import torch
import triton
import triton.language as tl

from ..conv.triton import causal_conv1d_update_triton
from ..norm.triton import gated_rms_norm_triton
from ..utils.triton import (gated_delta_rule_step, gated_rms_norm_apply, head_block_of_program, l2norm_vec,
                            softplus_gate, state_is_vk, state_tile_mask, state_tile_offsets, value_blocks)


@triton.jit
def gdn_decode_kernel(
    x, z, a, b, A_log, dt_bias, norm_weight, ssm_states, state_indices, out, scale, eps,
    stride_x_b, stride_z_b, stride_z_h, stride_a_b, stride_b_b, stride_s_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, ROUND_PRODUCT: tl.constexpr, STATE_VK: tl.constexpr, STREAM_STATE: tl.constexpr,
):
    # x: the conv's output [B, 2 H K + HV V]. One program per (sequence, value head, V block of BV rows).
    NV: tl.constexpr = (V + BV - 1) // BV
    i_bhv, i_v = head_block_of_program(NV)
    i_b, i_hv = i_bhv // HV, i_bhv % HV
    i_h = i_hv // (HV // H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    slot = tl.load(state_indices + i_b).to(tl.int64)
    p_out = out + i_b.to(tl.int64) * (HV * V) + i_hv * V + o_v
    if slot < 0:
        tl.store(p_out, tl.zeros([BV], dtype=out.dtype.element_ty), mask=m_v)
        return
    p_h = ssm_states + slot * stride_s_n + i_hv * K * V + state_tile_offsets(o_k, o_v, K, V, STATE_VK)
    m_h = state_tile_mask(m_k, m_v, STATE_VK)
    if STREAM_STATE:  # each state is read and written once a step: loaded evict-first, stored .cs
        b_h = tl.load(p_h, mask=m_h, other=0, eviction_policy="evict_first").to(tl.float32)
    else:
        b_h = tl.load(p_h, mask=m_h, other=0).to(tl.float32)
    p_x = x + i_b.to(tl.int64) * stride_x_b
    b_q = tl.load(p_x + i_h * K + o_k, mask=m_k, other=0).to(tl.float32)
    b_k = tl.load(p_x + (H + i_h) * K + o_k, mask=m_k, other=0).to(tl.float32)
    b_v = tl.load(p_x + 2 * H * K + i_hv * V + o_v, mask=m_v, other=0).to(tl.float32)
    b_q = l2norm_vec(b_q, USE_L2NORM) * scale
    b_k = l2norm_vec(b_k, USE_L2NORM)
    b_g = softplus_gate(tl.load(a + i_b * stride_a_b + i_hv), tl.load(A_log + i_hv), tl.load(dt_bias + i_hv))
    b_beta = tl.sigmoid(tl.load(b + i_b * stride_b_b + i_hv).to(tl.float32))
    b_h, b_o = gated_delta_rule_step(b_h, b_q, b_k, b_v, b_g, b_beta, STATE_VK)
    if STREAM_STATE:
        tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h, cache_modifier=".cs")
    else:
        tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h)
    if NV == 1:
        b_z = tl.load(z + i_b * stride_z_b + i_hv * stride_z_h + o_v, mask=m_v, other=0).to(tl.float32)
        b_nw = tl.load(norm_weight + o_v, mask=m_v, other=0).to(tl.float32)
        b_o = gated_rms_norm_apply(b_o[None, :], b_z[None, :], b_nw, eps, V, x.dtype.element_ty, ROUND_PRODUCT)
        tl.store(p_out[None, :], b_o.to(out.dtype.element_ty), mask=m_v[None, :])
    else:
        tl.store(p_out, b_o.to(out.dtype.element_ty), mask=m_v)


def decode_plan(n_heads: int, K: int, V: int, state_bytes: int) -> tuple[int, int, bool]:
    """(BV, num_warps, stream_state) of gdn_decode for n_heads = B * HV state slices laid out [V, K] of
    state_bytes per element, measured on the H200 at TP 1, 2 and 4 (kernels/benchmarks/RESULTS_H200.md): a head
    per program on 16 warps, the norm in place, for few slices; else 32 rows per warp-sized program, as vLLM's
    packed decode, and the norm as a third launch. The state is loaded evict-first and stored streaming (.cs) up to
    STREAM_MAX_BYTES of states a step (both hints: either alone was slower than neither)."""
    stream = n_heads * K * V * state_bytes <= STREAM_MAX_BYTES
    if n_heads <= WHOLE_HEAD_MAX_HEADS[state_bytes]:
        return triton.next_power_of_2(V), 16, stream
    return 32, 1, stream


# (rows per program, num_warps) of the decode's norm launch, measured on the H200: 4 rows on 2 warps is as fast as
# the op's default (32 rows on 4 warps, tuned for prefill) at B = 256 and faster at B = 32
DECODE_NORM_BLOCK = (4, 2)

# The most state slices decoded a head per program, by state element size (32-row blocks from there on), from
# a4e6e98 and d6dad90's H200 runs. fp32: whole heads 3-11% faster at 8 to 32 slices (B = 1), blocks 5-10% faster
# at 256 to 1024; in between not measured. bf16: whole heads 7-17% faster at 32 to 512 slices, within 1% at 1024
# to 4096 (0.7% slower at 4096), 6% slower at 8192
WHOLE_HEAD_MAX_HEADS = {4: 127, 2: 2048}
# Streaming the states up to 128 MiB of states a step: 0.5-4% faster there (B = 32 and 64 at TP 1,
# B = 256 at TP 2 with bf16 states; one row 0.5% slower), 2.8-4.1% slower at 256 and 512 MiB (B = 256 at TP 1 and
# with fp32 states at TP 2)
STREAM_MAX_BYTES = 128 << 20


def gdn_decode_triton(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                      norm_eps, scale, ssm_states, state_indices, use_qk_l2norm, BV=None, num_warps=None,
                      stream_state=None):
    """Triton gdn_decode (see ops.py). BV, num_warps, stream_state (the state loaded evict-first, stored .cs):
    decode_plan's by default ([V, K] states), value_blocks' for [K, V] states. Returns out: [B, HV, V]."""
    B, D = mixed_qkv.shape
    HV, K, V = ssm_states.shape[1:]
    H = (D - HV * V) // (2 * K)
    assert D == 2 * H * K + HV * V and H > 0 and HV % H == 0, "mixed_qkv must be [B, 2 H K + HV V]"
    assert z.shape == (B, HV, V) and z.stride(2) == 1
    assert a.shape == (B, HV) and b.shape == (B, HV) and a.stride(1) == 1 and b.stride(1) == 1
    assert A_log.shape == (HV,) and dt_bias.shape == (HV,) and norm_weight.shape == (V,)
    assert A_log.is_contiguous() and dt_bias.is_contiguous() and norm_weight.is_contiguous()
    state_vk = state_is_vk(ssm_states)
    assert state_indices.dtype == torch.int32 and state_indices.shape == (B,) and state_indices.is_contiguous()
    x = causal_conv1d_update_triton(mixed_qkv, conv_weight, conv_bias, conv_states, state_indices, True)
    out = torch.empty(B, HV, V, dtype=mixed_qkv.dtype, device=mixed_qkv.device)
    if B == 0:
        return out
    plan_bv, plan_warps, plan_stream = decode_plan(B * HV, K, V, ssm_states.element_size()) if state_vk else \
        (None, None, False)
    if BV is None:
        BV, num_warps = plan_bv, plan_warps
    stream_state = plan_stream if stream_state is None else stream_state
    BV, num_warps = value_blocks(B * HV, V, BV, num_warps, state_vk)
    NV = triton.cdiv(V, BV)
    gdn_decode_kernel[(B * HV * NV,)](
        x, z, a, b, A_log, dt_bias, norm_weight, ssm_states, state_indices, out, scale, norm_eps,
        x.stride(0), z.stride(0), z.stride(1), a.stride(0), b.stride(0), ssm_states.stride(0),
        H=H, HV=HV, K=K, V=V, BK=triton.next_power_of_2(K), BV=BV, USE_L2NORM=use_qk_l2norm,
        ROUND_PRODUCT=torch.promote_types(norm_weight.dtype, mixed_qkv.dtype) != torch.float32,
        STATE_VK=state_vk, STREAM_STATE=stream_state, num_warps=num_warps,
    )
    if NV > 1:
        out = gated_rms_norm_triton(out, z, norm_weight, norm_eps, *DECODE_NORM_BLOCK)
    return out
