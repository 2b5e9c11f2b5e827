"""Triton chunk_gated_delta_rule, fused_gdn_prefill and fused_recurrent_gated_delta_rule on the GPU, through
torch.ops, against the token-by-token fp32 reference, at Qwen3-Next head sizes.

B = decode batch, H = key heads, HV = value heads, K = key head dim, V = value head dim.
"""
import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import qwen3next_kernels.cuda  # noqa: E402,F401
from triton_checks import check_chunk, check_recurrent  # noqa: E402

ops = torch.ops.qwen3next
LENS = [1, 63, 64, 65, 1000]
QWEN = (16, 32, 128, 128)  # H, HV, K, V


@pytest.mark.parametrize(("dtype", "state_dtype", "fused_gating"), [
    (torch.float32, torch.float32, False),
    (torch.bfloat16, torch.float32, False),
    (torch.bfloat16, torch.bfloat16, True),
], ids=["fp32", "bf16-fp32state", "bf16-bf16state-fused_gating"])
def test_chunk_gated_delta_rule_cuda(dtype, state_dtype, fused_gating):
    op = ops.fused_gdn_prefill if fused_gating else ops.chunk_gated_delta_rule
    # fp32 inputs run the dots as three tf32 passes: close to fp32 but not equal
    check_chunk(op, "cuda", LENS, *QWEN, dtype=dtype, state_dtype=state_dtype, fused_gating=fused_gating,
                tol=1e-4 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("gates", ["g_near_0", "g_very_negative", "beta_near_0", "beta_near_1"])
def test_chunk_gated_delta_rule_cuda_extreme_gates(gates):
    check_chunk(ops.chunk_gated_delta_rule, "cuda", [65, 130, 1], *QWEN, gates=gates, tol=1e-4)


def test_chunk_gated_delta_rule_cuda_no_l2norm_small_heads():
    check_chunk(ops.chunk_gated_delta_rule, "cuda", [200, 3, 64], 2, 4, 32, 48, use_qk_l2norm=False, tol=1e-4)


@pytest.mark.parametrize(("B", "dtype", "state_dtype"), [(1, torch.float32, torch.float32),
                                                         (64, torch.bfloat16, torch.float32),
                                                         (33, torch.bfloat16, torch.bfloat16)])
def test_fused_recurrent_gated_delta_rule_cuda(B, dtype, state_dtype):
    check_recurrent(ops.fused_recurrent_gated_delta_rule, "cuda", B, *QWEN, dtype=dtype, state_dtype=state_dtype)


def test_opcheck_gated_delta_rule_cuda():
    d = dict(device="cuda")
    T, H, HV, K, V = 70, 1, 2, 16, 16
    q, k, v = torch.randn(T, H, K, **d), torch.randn(T, H, K, **d), torch.randn(T, HV, V, **d)
    g, beta = -torch.rand(T, HV, **d), torch.rand(T, HV, **d)
    states = torch.randn(4, HV, K, V, **d)
    cu = torch.tensor([0, 5, 70], dtype=torch.int32, **d)
    idx = torch.tensor([2, 0], dtype=torch.int32, **d)
    hi = torch.tensor([True, False], **d)
    torch.library.opcheck(ops.chunk_gated_delta_rule.default, (q, k, v, g, beta, 0.25, states, cu, idx, hi, True))
    torch.library.opcheck(ops.fused_gdn_prefill.default, (q, k, v, g, beta, torch.randn(HV, **d),
                                                          torch.randn(HV, **d), 0.25, states, cu, idx, hi, True))
    torch.library.opcheck(ops.fused_recurrent_gated_delta_rule.default,
                          (q[:2], k[:2], v[:2], g[:2], beta[:2], 0.25, states, idx, True))
