"""Triton causal_conv1d_verify and recurrent_gated_delta_rule_verify on the GPU, through torch.ops, against their
naive references (on CPU), and opcheck on CUDA tensors. The same checks run interpreted on CPU in
interpret/test_interpret_verify.py.

N = sequences, k = speculative tokens (T1 = k + 1 tokens and slots per sequence), D = conv channels,
H, HV = key and value heads, K, V = head dims.
"""
import pytest
import torch

QWEN = (16, 32, 128, 128)  # H, HV, K, V
QWEN_CONV = 2 * 16 * 128 + 32 * 128  # D = 2 H K + HV V
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
I32 = dict(dtype=torch.int32, device="cuda")


@cuda
@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_causal_conv1d_verify_cuda(k, dtype):
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import check_conv_verify
    check_conv_verify(torch.ops.qwen3next.causal_conv1d_verify, "cuda", 24, k, QWEN_CONV, dtype=dtype,
                      state_dtype=dtype, bias=False)


@cuda
@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"k{k}")
@pytest.mark.parametrize(("dtype", "state_dtype"), [(torch.bfloat16, torch.float32),
                                                    (torch.bfloat16, torch.bfloat16),
                                                    (torch.float32, torch.float32)],
                         ids=["bf16-fp32_state", "bf16", "fp32"])
def test_recurrent_gated_delta_rule_verify_cuda(k, dtype, state_dtype):
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import check_recurrent_verify
    check_recurrent_verify(torch.ops.qwen3next.recurrent_gated_delta_rule_verify, "cuda", 8, k, *QWEN,
                           dtype=dtype, state_dtype=state_dtype)


@cuda
@pytest.mark.parametrize("gates", ["g_near_0", "g_very_negative", "beta_near_0", "beta_near_1"])
def test_recurrent_gated_delta_rule_verify_extreme_gates_cuda(gates):
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import check_recurrent_verify
    check_recurrent_verify(torch.ops.qwen3next.recurrent_gated_delta_rule_verify, "cuda", 8, 2, 2, 4, 128, 128,
                           gates=gates)


@cuda
def test_recurrent_gated_delta_rule_verify_value_blocks_cuda():
    from qwen3next_kernels.gated_delta_rule.triton_verify import recurrent_gated_delta_rule_verify_triton
    from triton_checks import check_recurrent_verify
    for BV in (16, 32, 128):
        op = lambda *a: recurrent_gated_delta_rule_verify_triton(*a, BV=BV)  # noqa: E731
        check_recurrent_verify(op, "cuda", 6, 3, 2, 4, 64, 96, use_qk_l2norm=False)


@cuda
def test_opcheck_verify_cuda():
    import qwen3next_kernels.cuda  # noqa: F401
    d = dict(device="cuda")
    D, W, L = 48, 4, 5  # k = 2
    torch.library.opcheck(torch.ops.qwen3next.causal_conv1d_verify.default,
                          (torch.randn(4, D, **d), torch.randn(D, W, **d), torch.randn(D, **d),
                           torch.randn(6, L, D, **d), torch.tensor([0, 3, 4], **I32), torch.tensor([2, 5], **I32),
                           torch.tensor([2, 1], **I32), True))
    H, HV, K, V = 1, 2, 16, 16
    q = torch.randn(4, H, K, **d)
    torch.library.opcheck(torch.ops.qwen3next.recurrent_gated_delta_rule_verify.default,
                          (q, torch.randn(4, H, K, **d), torch.randn(4, HV, V, **d), -torch.rand(4, HV, **d),
                           torch.rand(4, HV, **d), 0.25, torch.randn(8, HV, K, V, **d),
                           torch.tensor([0, 3, 4], **I32), torch.tensor([[1, 2, 3], [4, 5, 6]], **I32),
                           torch.tensor([2, 1], **I32), True))
