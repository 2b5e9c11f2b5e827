"""Triton conv kernels on CPU under TRITON_INTERPRET=1, small shapes, against the naive reference."""
import pytest
import torch

from qwen3next_kernels.conv.triton_conv import causal_conv1d_fwd_triton, causal_conv1d_update_triton
from triton_checks import check_conv_fwd, check_conv_update


@pytest.mark.parametrize(("lens", "L", "dtype", "bias", "silu"), [
    ([1, 63, 64, 65], 3, torch.float32, True, True),
    ([2, 1, 130, 3], 5, torch.bfloat16, False, True),
    ([1, 2, 1], 4, torch.float32, True, False),
], ids=["L1-63-64-65", "bf16-L5", "short-no_silu"])
def test_causal_conv1d_fwd_interpreted(lens, L, dtype, bias, silu):
    check_conv_fwd(causal_conv1d_fwd_triton, "cpu", lens, 136, L=L, dtype=dtype, state_dtype=dtype, bias=bias,
                   silu=silu)


@pytest.mark.parametrize(("B", "L", "dtype"), [(1, 3, torch.float32), (5, 6, torch.bfloat16)])
def test_causal_conv1d_update_interpreted(B, L, dtype):
    check_conv_update(causal_conv1d_update_triton, "cpu", B, 300, L=L, dtype=dtype, state_dtype=dtype)
