"""Triton causal_conv1d_fwd / causal_conv1d_update on the GPU, through torch.ops, against the naive reference.

T = total tokens, B = decode batch, D = conv channels, L = conv state length.
"""
import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import qwen3next_kernels.cuda  # noqa: E402,F401
from triton_checks import check_conv_fwd, check_conv_update  # noqa: E402

ops = torch.ops.qwen3next
LENS = [1, 63, 64, 65, 1000]


@pytest.mark.parametrize(("dtype", "state_dtype", "L", "bias"), [
    (torch.float32, torch.float32, 3, True),
    (torch.bfloat16, torch.bfloat16, 3, False),
    (torch.bfloat16, torch.float32, 5, True),
], ids=["fp32", "bf16", "bf16-fp32state-L5"])
def test_causal_conv1d_fwd_cuda(dtype, state_dtype, L, bias):
    check_conv_fwd(ops.causal_conv1d_fwd, "cuda", LENS, 8192, L=L, dtype=dtype, state_dtype=state_dtype, bias=bias)


def test_causal_conv1d_fwd_cuda_no_silu_short_sequences():
    check_conv_fwd(ops.causal_conv1d_fwd, "cuda", [1, 2, 1, 3, 2], 300, L=4, silu=False)


@pytest.mark.parametrize(("B", "dtype", "L"), [(1, torch.float32, 3), (64, torch.bfloat16, 3), (7, torch.float32, 6)])
def test_causal_conv1d_update_cuda(B, dtype, L):
    check_conv_update(ops.causal_conv1d_update, "cuda", B, 8192, L=L, dtype=dtype, state_dtype=dtype)


def test_opcheck_conv_cuda():
    x = torch.randn(70, 64, device="cuda")
    w = torch.randn(64, 4, device="cuda")
    states = torch.randn(4, 3, 64, device="cuda")
    cu = torch.tensor([0, 5, 70], dtype=torch.int32, device="cuda")
    idx = torch.tensor([2, 0], dtype=torch.int32, device="cuda")
    hi = torch.tensor([True, False], device="cuda")
    torch.library.opcheck(ops.causal_conv1d_fwd.default, (x, w, None, states, cu, idx, hi, True))
    torch.library.opcheck(ops.causal_conv1d_update.default, (x[:2], w, w[:, 0].contiguous(), states, idx, True))
