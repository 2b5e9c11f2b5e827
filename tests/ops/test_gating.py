"""gdn_gating against the elementwise fp32 reference.

T = total tokens, HV = value heads.
"""
import pytest
import torch

from qwen3next_kernels.gating import gdn_gating, naive_gdn_gating


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt()).item()


def make_inputs(T, HV, dtype, extreme, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A_log = torch.randn(HV, generator=gen)
    dt_bias = torch.randn(HV, generator=gen).to(dtype)
    ba = torch.randn(T, 2 * HV, generator=gen) * (30 if extreme else 3)  # extreme: past softplus' threshold of 20
    b, a = ba.to(dtype).split(HV, dim=1)  # row-strided views, as from a fused projection
    return A_log, a, b, dt_bias


CASES = [
    # (T, HV, dtype, extreme)
    (1, 4, torch.float32, False),
    (63, 4, torch.float32, False),
    (65, 32, torch.float32, True),
    (500, 32, torch.bfloat16, False),
    (500, 32, torch.bfloat16, True),
]


@pytest.mark.parametrize(("T", "HV", "dtype", "extreme"),
                         [pytest.param(*c, id=f"T{c[0]}-HV{c[1]}-{str(c[2])[6:]}{'-extreme' if c[3] else ''}")
                          for c in CASES])
def test_gdn_gating(T, HV, dtype, extreme):
    A_log, a, b, dt_bias = make_inputs(T, HV, dtype, extreme)
    g_ref, beta_ref = naive_gdn_gating(A_log, a, b, dt_bias)
    g, beta = gdn_gating(A_log, a, b, dt_bias)

    for out, ref in ((g, g_ref), (beta, beta_ref)):
        assert out.shape == (T, HV) and out.dtype == torch.float32 and out.is_contiguous()
        assert out.isfinite().all()
        assert rel_rms(out, ref) < 1e-6
    assert (g <= 0).all() and (beta >= 0).all() and (beta <= 1).all()


def test_opcheck_gdn_gating():
    A_log, a, b, dt_bias = make_inputs(7, 4, torch.bfloat16, False)
    torch.library.opcheck(torch.ops.qwen3next.gdn_gating.default, (A_log, a, b, dt_bias))
