"""Triton chunked prefill and recurrent decode on CPU under TRITON_INTERPRET=1, small heads, against the
token-by-token reference."""
import pytest
import torch

from qwen3next_kernels.gated_delta_rule.triton_chunk import chunk_gdr_fwd_triton, chunk_gated_delta_rule_triton
from qwen3next_kernels.gated_delta_rule.triton_fused import fused_gdn_prefill_triton
from qwen3next_kernels.gated_delta_rule.triton_recurrent import fused_recurrent_gated_delta_rule_triton
from triton_checks import check_chunk, check_recurrent

SMALL = (1, 2, 16, 32)  # H, HV, K, V


@pytest.mark.parametrize(("lens", "dtype", "state_dtype"), [
    ([1, 63, 64, 65], torch.float32, torch.float32),
    ([70, 2, 3], torch.bfloat16, torch.bfloat16),
], ids=["fp32-L1-63-64-65", "bf16"])
def test_chunk_gated_delta_rule_interpreted(lens, dtype, state_dtype):
    check_chunk(chunk_gated_delta_rule_triton, "cpu", lens, *SMALL, dtype=dtype, state_dtype=state_dtype)


def test_fused_gdn_prefill_interpreted():
    check_chunk(fused_gdn_prefill_triton, "cpu", [65, 3], 2, 4, 16, 16, fused_gating=True)


@pytest.mark.parametrize("gates", ["g_near_0", "g_very_negative", "beta_near_0", "beta_near_1"])
def test_chunk_gated_delta_rule_extreme_gates_interpreted(gates):
    check_chunk(chunk_gated_delta_rule_triton, "cpu", [40], *SMALL, gates=gates)


def test_chunk_gated_delta_rule_value_blocks_interpreted():
    op = lambda *a: chunk_gdr_fwd_triton(*a, BV=16)  # noqa: E731
    check_chunk(op, "cpu", [66, 1], 1, 2, 16, 48, use_qk_l2norm=False)


@pytest.mark.parametrize(("dtype", "state_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_fused_recurrent_gated_delta_rule_interpreted(dtype, state_dtype):
    check_recurrent(fused_recurrent_gated_delta_rule_triton, "cpu", 5, 2, 4, 16, 64, dtype=dtype,
                    state_dtype=state_dtype)
