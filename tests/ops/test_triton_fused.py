"""Triton fused_gdn_decode and gated_delta_rule_verify on the GPU, through torch.ops, against their CPU ops
(the base ops composed), and the verification scheme against the naive recurrence (on CPU).

B = decode batch, T1 = tokens per sequence in a verification step, H, HV = key and value heads, K, V = head dims.
"""
import pytest
import torch

from qwen3next_kernels.gated_delta_rule.fused_ops import gated_delta_rule_verify, spec_cache_width
from qwen3next_kernels.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

QWEN = (16, 32, 128, 128)  # H, HV, K, V
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_verify_continues_from_any_accepted_position():
    """Two verification steps equal the plain recurrence over the accepted tokens then the new ones."""
    H, HV, K, V, T1 = 1, 2, 8, 8, 3
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2 * T1, H, K, generator=gen), torch.randn(2 * T1, H, K, generator=gen)
    v = torch.randn(2 * T1, HV, V, generator=gen)
    g, beta = -torch.rand(2 * T1, HV, generator=gen), torch.rand(2 * T1, HV, generator=gen)
    state0 = torch.randn(1, HV, K, V, generator=gen)
    for accepted in range(1, T1 + 1):
        states = state0.clone()
        cache = torch.zeros(1, T1, spec_cache_width(H, HV, K, V))
        slot = torch.tensor([0], dtype=torch.int32)
        step = lambda s, n: gated_delta_rule_verify(q[s], k[s], v[s], g[s], beta[s], 0.3, states, cache, slot,  # noqa
                                                    torch.tensor([n], dtype=torch.int32), True)
        o1 = step(slice(0, T1), 0)
        o2 = step(slice(T1, 2 * T1), accepted)
        keep = list(range(accepted)) + list(range(T1, 2 * T1))
        ref_state = state0.clone()
        ref = naive_recurrent_gated_delta_rule(q[keep], k[keep], v[keep], g[keep], beta[keep], 0.3, ref_state,
                                               torch.tensor([0, len(keep)], dtype=torch.int32), slot,
                                               torch.tensor([True]), True)
        torch.testing.assert_close(o1[:accepted], ref[:accepted], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o2, ref[accepted:], rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.parametrize(("B", "dtype", "state_dtype"), [(1, torch.bfloat16, torch.float32),
                                                         (64, torch.bfloat16, torch.bfloat16),
                                                         (5, torch.float32, torch.float32)])
def test_fused_gdn_decode_cuda(B, dtype, state_dtype):
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import check_fused_decode
    check_fused_decode(torch.ops.qwen3next.fused_gdn_decode, "cuda", B, *QWEN, dtype=dtype, state_dtype=state_dtype)


@cuda
@pytest.mark.parametrize(("B", "state_dtype"), [(64, torch.float32), (7, torch.bfloat16)])
def test_gated_delta_rule_verify_cuda(B, state_dtype):
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import check_verify
    check_verify(torch.ops.qwen3next.gated_delta_rule_verify, "cuda", B, 3, *QWEN, dtype=torch.bfloat16,
                 state_dtype=state_dtype)


@cuda
def test_opcheck_fused_cuda():
    import qwen3next_kernels.cuda  # noqa: F401
    from triton_checks import decode_inputs
    gen = torch.Generator().manual_seed(0)
    x = {n: (t.cuda() if torch.is_tensor(t) else t)
         for n, t in decode_inputs(3, 1, 2, 16, 16, torch.float32, torch.float32, gen).items()}
    torch.library.opcheck(torch.ops.qwen3next.fused_gdn_decode.default, tuple(x.values()))
    d = dict(device="cuda")
    B, T1, H, HV, K, V = 2, 3, 1, 2, 16, 16
    q = torch.randn(B * T1, H, K, **d)
    torch.library.opcheck(torch.ops.qwen3next.gated_delta_rule_verify.default,
                          (q, q.clone(), torch.randn(B * T1, HV, V, **d), -torch.rand(B * T1, HV, **d),
                           torch.rand(B * T1, HV, **d), 0.25, torch.randn(4, HV, K, V, **d),
                           torch.rand(4, T1, spec_cache_width(H, HV, K, V), **d),
                           torch.tensor([3, 1], dtype=torch.int32, **d), torch.tensor([1, 0], dtype=torch.int32, **d),
                           True))
