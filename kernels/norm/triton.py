"""Gated RMSNorm in Triton, the arithmetic of transformers' Qwen3NextRMSNormGated."""
import torch
import triton
import triton.language as tl

from ..utils.triton import gated_rms_norm_apply


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


def gated_rms_norm_triton(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float,
                          BR: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """Triton gated_rms_norm. x, z: [T, HV, V] (unit stride over V; any token/head strides), weight: [V]. BR: rows
    (token, head pairs) per program, 4096 // V by default."""
    T, HV, V = x.shape
    assert z.shape == x.shape and weight.shape == (V,) and weight.is_contiguous()
    assert x.stride(2) == 1 and z.stride(2) == 1, "x and z need a unit stride over V"
    out = torch.empty(T, HV, V, dtype=x.dtype, device=x.device)
    R = T * HV
    if R == 0:
        return out
    BV = triton.next_power_of_2(V)
    BR = BR or max(1, 4096 // BV)
    round_product = torch.promote_types(weight.dtype, x.dtype) != torch.float32
    gated_rms_norm_fwd_kernel[(triton.cdiv(R, BR),)](
        x, z, weight, out, eps, R, x.stride(0), x.stride(1), z.stride(0), z.stride(1),
        HV=HV, V=V, BR=BR, BV=BV, ROUND_PRODUCT=round_product, num_warps=num_warps,
    )
    return out

