"""Triton gating and gated RMSNorm on CPU under TRITON_INTERPRET=1, against the naive references."""
import pytest
import torch

from qwen3next_kernels.gating.triton_gating import gdn_gating_triton
from qwen3next_kernels.norm.triton_norm import gated_rms_norm_triton
from triton_checks import check_gating, check_norm


@pytest.mark.parametrize(("T", "dtype", "extreme"), [(1, torch.float32, False), (65, torch.bfloat16, True)])
def test_gdn_gating_interpreted(T, dtype, extreme):
    check_gating(gdn_gating_triton, "cpu", T, 6, dtype, extreme)


@pytest.mark.parametrize(("T", "dtype"), [(1, torch.float32), (63, torch.bfloat16)])
def test_gated_rms_norm_interpreted(T, dtype):
    check_norm(gated_rms_norm_triton, "cpu", T, 3, 48, dtype)
