"""Triton gdn_gating and gated_rms_norm on the GPU, through torch.ops, against the naive references.

T = total tokens, HV = value heads, V = value head dim.
"""
import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import qwen3next_kernels.cuda  # noqa: E402,F401
from triton_checks import check_gating, check_norm  # noqa: E402

ops = torch.ops.qwen3next


@pytest.mark.parametrize(("T", "dtype", "extreme"), [(1, torch.float32, False), (1000, torch.bfloat16, False),
                                                     (65, torch.float32, True)])
def test_gdn_gating_cuda(T, dtype, extreme):
    check_gating(ops.gdn_gating, "cuda", T, 32, dtype, extreme)


@pytest.mark.parametrize(("T", "dtype"), [(1, torch.float32), (63, torch.bfloat16), (1000, torch.bfloat16)])
def test_gated_rms_norm_cuda(T, dtype):
    check_norm(ops.gated_rms_norm, "cuda", T, 32, 128, dtype)


def test_opcheck_gating_norm_cuda():
    a, h = torch.randn(9, 4, device="cuda"), torch.randn(4, device="cuda")
    torch.library.opcheck(ops.gdn_gating.default, (h, a, a + 1, h + 1))
    x = torch.randn(9, 4, 16, device="cuda", dtype=torch.bfloat16)
    torch.library.opcheck(ops.gated_rms_norm.default, (x, x + 1, torch.ones_like(x[0, 0]), 1e-6))
