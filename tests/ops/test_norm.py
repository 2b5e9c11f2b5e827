"""gated_rms_norm against the token-by-token fp32 reference and transformers' Qwen3NextRMSNormGated.

T = total tokens, HV = value heads, V = value head dim.
"""
import pytest
import torch
import torch.nn.functional as F

from qwen3next_kernels.norm import gated_rms_norm, naive_gated_rms_norm


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt()).item()


def make_inputs(T, HV, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, HV, V, generator=gen).to(dtype)
    z = torch.randn(T, HV, V, generator=gen).to(dtype)
    weight = (1 + 0.1 * torch.randn(V, generator=gen)).to(dtype)
    return x, z, weight


def plain_bf16_gated_rms_norm(x, z, weight, eps):
    """The same norm in bf16 arithmetic throughout, the yardstick for bf16 error."""
    x, z, weight = x.bfloat16(), z.bfloat16(), weight.bfloat16()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) * F.silu(z)


CASES = [
    # (T, HV, V, dtype)
    (1, 1, 16, torch.float32),
    (63, 4, 64, torch.float32),
    (65, 2, 128, torch.float32),
    (500, 4, 64, torch.bfloat16),
]


@pytest.mark.parametrize(("T", "HV", "V", "dtype"),
                         [pytest.param(*c, id=f"T{c[0]}-HV{c[1]}-V{c[2]}-{str(c[3])[6:]}") for c in CASES])
def test_gated_rms_norm(T, HV, V, dtype):
    x, z, weight = make_inputs(T, HV, V, dtype)
    ref = naive_gated_rms_norm(x.float(), z.float(), weight.float(), 1e-6)
    out = gated_rms_norm(x, z, weight, 1e-6)

    assert out.shape == (T, HV, V) and out.dtype == dtype and out.is_contiguous()
    if dtype == torch.float32:
        assert rel_rms(out, ref) < 1e-6
    else:
        assert rel_rms(out, ref) <= 2 * rel_rms(plain_bf16_gated_rms_norm(x, z, weight, 1e-6), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_rms_norm_matches_transformers(dtype):
    modeling = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    x, z, weight = make_inputs(65, 4, 64, dtype)
    module = modeling.Qwen3NextRMSNormGated(64, eps=1e-6).to(dtype)
    module.weight.data.copy_(weight)
    with torch.no_grad():
        expected = module(x, z)
    torch.testing.assert_close(gated_rms_norm(x, z, weight, 1e-6), expected, rtol=0, atol=0)


def test_opcheck_gated_rms_norm():
    x, z, weight = make_inputs(7, 2, 16, torch.bfloat16)
    torch.library.opcheck(torch.ops.qwen3next.gated_rms_norm.default, (x, z, weight, 1e-6))
