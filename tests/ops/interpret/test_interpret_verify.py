"""Triton speculative-verification kernels (causal_conv1d_verify, recurrent_gated_delta_rule_verify) on CPU under
TRITON_INTERPRET=1, small shapes, against the naive references."""
import pytest
import torch

from qwen3next_kernels.conv.triton_verify import causal_conv1d_verify_triton
from qwen3next_kernels.gated_delta_rule.triton_verify import recurrent_gated_delta_rule_verify_triton
from triton_checks import check_conv_verify, check_recurrent_verify

SMALL = (1, 2, 16, 32)  # H, HV, K, V


@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
@pytest.mark.parametrize(("dtype", "bias", "silu"), [(torch.float32, True, True), (torch.bfloat16, False, True),
                                                     (torch.float32, False, False)],
                         ids=["fp32", "bf16-no_bias", "fp32-no_silu"])
def test_causal_conv1d_verify_interpreted(k, dtype, bias, silu):
    check_conv_verify(causal_conv1d_verify_triton, "cpu", 6, k, 136, dtype=dtype, state_dtype=dtype, bias=bias,
                      silu=silu, seed=k)


@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
@pytest.mark.parametrize(("dtype", "state_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                    (torch.bfloat16, torch.float32)],
                         ids=["fp32", "bf16", "bf16-fp32_state"])
def test_recurrent_gated_delta_rule_verify_interpreted(k, dtype, state_dtype):
    check_recurrent_verify(recurrent_gated_delta_rule_verify_triton, "cpu", 6, k, *SMALL, dtype=dtype,
                           state_dtype=state_dtype, seed=k)


@pytest.mark.parametrize("gates", ["g_near_0", "g_very_negative", "beta_near_0", "beta_near_1"])
def test_recurrent_gated_delta_rule_verify_extreme_gates_interpreted(gates):
    check_recurrent_verify(recurrent_gated_delta_rule_verify_triton, "cpu", 5, 2, *SMALL, gates=gates)


def test_recurrent_gated_delta_rule_verify_no_l2norm_value_blocks_interpreted():
    op = lambda *a: recurrent_gated_delta_rule_verify_triton(*a, BV=16)  # noqa: E731
    check_recurrent_verify(op, "cpu", 4, 3, 2, 4, 16, 48, use_qk_l2norm=False)
