"""gated_rms_norm against the token-by-token fp32 reference and transformers' Qwen3NextRMSNormGated: the CPU op,
then every device, then opcheck."""
import pytest
import torch
import torch.nn.functional as F
from utils import assert_opcheck, check_gated_rms_norm, dtype_id, norm_inputs, on_devices, opcheck_params, rel_rms

from qwen3next_kernels.norm import gated_rms_norm, naive_gated_rms_norm


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
                         [pytest.param(*c, id=f"T{c[0]}-HV{c[1]}-V{c[2]}-{dtype_id(c[3])}") for c in CASES])
def test_gated_rms_norm(T, HV, V, dtype):
    x, z, weight = norm_inputs(T, HV, V, dtype)
    ref = naive_gated_rms_norm(x.float(), z.float(), weight.float(), 1e-6)
    out = gated_rms_norm(x, z, weight, 1e-6)

    assert out.shape == (T, HV, V) and out.dtype == dtype and out.is_contiguous()
    if dtype == torch.float32:
        assert rel_rms(out, ref) < 1e-6
    else:
        assert rel_rms(out, ref) <= 2 * rel_rms(plain_bf16_gated_rms_norm(x, z, weight, 1e-6), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_gated_rms_norm_matches_transformers(dtype):
    modeling = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    x, z, weight = norm_inputs(65, 4, 64, dtype)
    module = modeling.Qwen3NextRMSNormGated(64, eps=1e-6).to(dtype)
    module.weight.data.copy_(weight)
    with torch.no_grad():
        expected = module(x, z)
    torch.testing.assert_close(gated_rms_norm(x, z, weight, 1e-6), expected, rtol=0, atol=0)


SMALL = {
    "T1-fp32": dict(T=1, HV=3, V=48, dtype=torch.float32),
    "T63-bf16": dict(T=63, HV=3, V=48, dtype=torch.bfloat16),
}
QWEN = {
    "T1-fp32": dict(T=1, HV=32, V=128, dtype=torch.float32),
    "T63-bf16": dict(T=63, HV=32, V=128, dtype=torch.bfloat16),
    "T1000-bf16": dict(T=1000, HV=32, V=128, dtype=torch.bfloat16),
}


@pytest.mark.parametrize(("device", "case"), on_devices("gated_rms_norm", SMALL, QWEN))
def test_gated_rms_norm_devices(run, device, case):
    run(check_gated_rms_norm, device, **case)


@pytest.mark.parametrize(("op", "device"), opcheck_params(["gated_rms_norm"]))
def test_opcheck(op, device):
    assert_opcheck(op, device)
