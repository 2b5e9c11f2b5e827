"""GDN gating in Triton: g = -exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b), fp32 out."""
import torch
import triton
import triton.language as tl

from ..utils.triton import softplus_gate


@triton.jit
def gdn_gating_fwd_kernel(
    A_log, a, b, dt_bias, g, beta,
    T, stride_a_t, stride_b_t,
    HV: tl.constexpr, BT: tl.constexpr, BHV: tl.constexpr,
):
    i_t = tl.program_id(0)
    o_t = i_t * BT + tl.arange(0, BT)  # [BT]
    o_h = tl.arange(0, BHV)  # [BHV]
    m_h = o_h < HV
    m = (o_t < T)[:, None] & m_h[None, :]
    b_a = tl.load(a + o_t[:, None] * stride_a_t + o_h[None, :], mask=m, other=0)
    b_b = tl.load(b + o_t[:, None] * stride_b_t + o_h[None, :], mask=m, other=0).to(tl.float32)
    b_A = tl.load(A_log + o_h, mask=m_h, other=0)
    b_dt = tl.load(dt_bias + o_h, mask=m_h, other=0)
    b_g = softplus_gate(b_a, b_A[None, :], b_dt[None, :])
    tl.store(g + o_t[:, None] * HV + o_h[None, :], b_g, mask=m)
    tl.store(beta + o_t[:, None] * HV + o_h[None, :], tl.sigmoid(b_b), mask=m)


def gdn_gating_triton(A_log: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                      dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton gdn_gating. A_log: [HV] fp32, a, b: [T, HV] (unit head stride), dt_bias: [HV].
    Returns (g, beta): [T, HV] fp32."""
    T, HV = a.shape
    assert b.shape == (T, HV) and A_log.shape == (HV,) and dt_bias.shape == (HV,)
    assert a.stride(1) == 1 and b.stride(1) == 1, "a and b need a unit head stride"
    assert A_log.is_contiguous() and dt_bias.is_contiguous()
    g = torch.empty(T, HV, dtype=torch.float32, device=a.device)
    beta = torch.empty(T, HV, dtype=torch.float32, device=a.device)
    if T == 0:
        return g, beta
    BHV = triton.next_power_of_2(HV)
    BT = max(1, 2048 // BHV)
    gdn_gating_fwd_kernel[(triton.cdiv(T, BT),)](
        A_log, a, b, dt_bias, g, beta, T, a.stride(0), b.stride(0), HV=HV, BT=BT, BHV=BHV, num_warps=4,
    )
    return g, beta

