"""gdn_gating against the elementwise fp32 reference: the CPU op, then every device, then opcheck."""
import pytest
import torch
from utils import assert_opcheck, check_gdn_gating, dtype_id, gating_inputs, on_devices, opcheck_params, rel_rms

from qwen3next_kernels.gating import gdn_gating, naive_gdn_gating

CASES = [
    # (T, HV, dtype, extreme)
    (1, 4, torch.float32, False),
    (63, 4, torch.float32, False),
    (65, 32, torch.float32, True),
    (500, 32, torch.bfloat16, False),
    (500, 32, torch.bfloat16, True),
]


@pytest.mark.parametrize(("T", "HV", "dtype", "extreme"),
                         [pytest.param(*c, id=f"T{c[0]}-HV{c[1]}-{dtype_id(c[2])}{'-extreme' if c[3] else ''}")
                          for c in CASES])
def test_gdn_gating(T, HV, dtype, extreme):
    A_log, a, b, dt_bias = gating_inputs(T, HV, dtype, extreme)
    g_ref, beta_ref = naive_gdn_gating(A_log, a, b, dt_bias)
    g, beta = gdn_gating(A_log, a, b, dt_bias)

    for out, ref in ((g, g_ref), (beta, beta_ref)):
        assert out.shape == (T, HV) and out.dtype == torch.float32 and out.is_contiguous()
        assert out.isfinite().all()
        assert rel_rms(out, ref) < 1e-6
    assert (g <= 0).all() and (beta >= 0).all() and (beta <= 1).all()


SMALL = {
    "T1-fp32": dict(T=1, HV=6, dtype=torch.float32, extreme=False),
    "T65-bf16-extreme": dict(T=65, HV=6, dtype=torch.bfloat16, extreme=True),
}
QWEN = {
    "T1-fp32": dict(T=1, HV=32, dtype=torch.float32, extreme=False),
    "T1000-bf16": dict(T=1000, HV=32, dtype=torch.bfloat16, extreme=False),
    "T65-fp32-extreme": dict(T=65, HV=32, dtype=torch.float32, extreme=True),
}


@pytest.mark.parametrize(("device", "case"), on_devices("gdn_gating", SMALL, QWEN))
def test_gdn_gating_devices(run, device, case):
    run(check_gdn_gating, device, **case)


@pytest.mark.parametrize(("op", "device"), opcheck_params(["gdn_gating"]))
def test_opcheck(op, device):
    assert_opcheck(op, device)
