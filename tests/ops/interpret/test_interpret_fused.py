"""Triton fused decode step and speculative verification on CPU under TRITON_INTERPRET=1, against their CPU ops."""
import pytest
import torch

from qwen3next_kernels.gated_delta_rule.triton_fused import fused_gdn_decode_triton, gated_delta_rule_verify_triton
from triton_checks import check_fused_decode, check_verify


@pytest.mark.parametrize(("dtype", "state_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_fused_gdn_decode_interpreted(dtype, state_dtype):
    check_fused_decode(fused_gdn_decode_triton, "cpu", 4, 2, 4, 16, 32, dtype=dtype, state_dtype=state_dtype)


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_gated_delta_rule_verify_interpreted(state_dtype):
    check_verify(gated_delta_rule_verify_triton, "cpu", 4, 3, 2, 4, 16, 32, state_dtype=state_dtype)
