"""Gated RMSNorm in Triton, the arithmetic of transformers' Qwen3NextRMSNormGated.

T = total tokens, HV = value heads, V = value head dim.
"""
import torch
import triton
import triton.language as tl

from .ops import gated_rms_norm


@triton.jit
def gated_rms_norm_apply(b_x, b_z, b_w, eps, V: tl.constexpr, ROUND_DTYPE: tl.constexpr,
                         ROUND_PRODUCT: tl.constexpr):
    """b_x, b_z: [R, BV] fp32 (zeros past V), b_w: [BV] fp32 -> [R, BV] fp32.

    h = x * rsqrt(mean(x^2) + eps) rounded to ROUND_DTYPE, times weight (rounded again when the weight is
    low precision too, as torch's promotion does), times silu(z)."""
    rstd = 1.0 / tl.sqrt(tl.sum(b_x * b_x, 1) / V + eps)  # [R]
    b_h = (b_x * rstd[:, None]).to(ROUND_DTYPE).to(tl.float32) * b_w[None, :]
    if ROUND_PRODUCT:
        b_h = b_h.to(ROUND_DTYPE).to(tl.float32)
    return b_h * b_z * tl.sigmoid(b_z)


@triton.jit
def gated_rms_norm_fwd_kernel(
    x, z, weight, out, eps, R,
    stride_x_t, stride_x_h, stride_z_t, stride_z_h,
    HV: tl.constexpr, V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr, ROUND_PRODUCT: tl.constexpr,
):
    i_r = tl.program_id(0)
    o_r = i_r * BR + tl.arange(0, BR)  # rows are (token, value head) pairs
    o_v = tl.arange(0, BV)
    m_v = o_v < V
    m = (o_r < R)[:, None] & m_v[None, :]
    o_t, o_h = (o_r // HV).to(tl.int64), o_r % HV
    b_x = tl.load(x + (o_t * stride_x_t + o_h * stride_x_h)[:, None] + o_v[None, :], mask=m, other=0)
    b_z = tl.load(z + (o_t * stride_z_t + o_h * stride_z_h)[:, None] + o_v[None, :], mask=m, other=0)
    b_w = tl.load(weight + o_v, mask=m_v, other=0).to(tl.float32)
    b_o = gated_rms_norm_apply(b_x.to(tl.float32), b_z.to(tl.float32), b_w, eps, V, x.dtype.element_ty,
                               ROUND_PRODUCT)
    tl.store(out + o_r.to(tl.int64)[:, None] * V + o_v[None, :], b_o.to(out.dtype.element_ty), mask=m)


def gated_rms_norm_triton(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton gated_rms_norm. x, z: [T, HV, V] (unit stride over V; any token/head strides), weight: [V]."""
    T, HV, V = x.shape
    assert z.shape == x.shape and weight.shape == (V,) and weight.is_contiguous()
    assert x.stride(2) == 1 and z.stride(2) == 1, "x and z need a unit stride over V"
    out = torch.empty(T, HV, V, dtype=x.dtype, device=x.device)
    R = T * HV
    if R == 0:
        return out
    BV = triton.next_power_of_2(V)
    BR = max(1, 4096 // BV)
    round_product = torch.promote_types(weight.dtype, x.dtype) != torch.float32
    gated_rms_norm_fwd_kernel[(triton.cdiv(R, BR),)](
        x, z, weight, out, eps, R, x.stride(0), x.stride(1), z.stride(0), z.stride(1),
        HV=HV, V=V, BR=BR, BV=BV, ROUND_PRODUCT=round_product, num_warps=4,
    )
    return out


gated_rms_norm.register_kernel("cuda")(gated_rms_norm_triton)
