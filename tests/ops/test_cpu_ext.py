"""The C++ CPU decode kernels (kernels/csrc/gdn_decode_cpu.cpp) against the PyTorch path and the fp32 references.

Where the extension is built, causal_conv1d_update, fused_recurrent_gated_delta_rule and gdn_decode run it on
CPU (test_conv.py and test_gated_delta_rule.py then test it against the references); here the same ops run once more
with it turned off, so the PyTorch fallback stays tested, and the whole decode step is checked.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from utils import rel_rms

from qwen3next_kernels import cpu_ext
from qwen3next_kernels.conv import causal_conv1d_update, naive_causal_conv1d_update
from qwen3next_kernels.gated_delta_rule import fused_recurrent_gated_delta_rule, naive_fused_recurrent_gated_delta_rule
from qwen3next_kernels.gating import naive_gdn_gating
from qwen3next_kernels.norm import naive_gated_rms_norm

NUM_SLOTS = 9
ops = torch.ops.qwen3next


@pytest.fixture(params=["cpp", "torch"])
def cpu_path(request, monkeypatch):
    """Runs a test on the C++ kernels and on the PyTorch path."""
    if request.param == "torch":
        monkeypatch.setitem(cpu_ext._state, "ok", False)
    elif not cpu_ext.available():
        pytest.skip("the C++ CPU kernels are not built here")
    return request.param


def test_extension_builds():
    """CI has a compiler: a broken build must fail here, not fall back silently."""
    if os.environ.get("QWEN3NEXT_CPU_EXT") == "0":
        pytest.skip("turned off by QWEN3NEXT_CPU_EXT=0")
    assert cpu_ext.available()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_decode_ops_on_both_paths(cpu_path, dtype, state_dtype):
    """The conv update and the recurrence, with padding and row-strided inputs, against the fp32 references."""
    B, H, HV, K, V, W, L = 4, 2, 4, 32, 32, 4, 3
    D = 2 * H * K + HV * V
    gen = torch.Generator().manual_seed(0)
    slots = torch.tensor([5, -1, 2, 7], dtype=torch.int32)
    x = torch.randn(B, D + 8, generator=gen).to(dtype)[:, :D]
    weight = (0.5 * torch.randn(D, W, generator=gen)).to(dtype)
    conv0 = torch.randn(NUM_SLOTS, L, D, generator=gen).to(dtype)
    conv_ref, conv = conv0.clone(), conv0.clone()
    ref = naive_causal_conv1d_update(x.float(), weight.float(), None, conv_ref, slots, True)
    out = causal_conv1d_update(x, weight, None, conv, slots, True)
    assert out.dtype == dtype and torch.equal(out[1], torch.zeros_like(out[1]))
    assert rel_rms(out, ref) < (1e-6 if dtype == torch.float32 else 4e-3)
    assert torch.equal(conv, conv_ref)

    q = out[:, :H * K].reshape(B, H, K)
    k = out[:, H * K:2 * H * K].reshape(B, H, K)
    v = out[:, 2 * H * K:].reshape(B, HV, V)
    g = F.logsigmoid(torch.randn(B, HV, generator=gen))
    beta = torch.rand(B, HV, generator=gen)
    states0 = (0.1 * torch.randn(NUM_SLOTS, HV, K, V, generator=gen)).to(state_dtype)
    ref_states, states = states0.clone(), states0.clone()
    ref = naive_fused_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, K ** -0.5, ref_states,
                                                 slots, True)
    o = fused_recurrent_gated_delta_rule(q, k, v, g, beta, K ** -0.5, states, slots, True)
    assert o.dtype == dtype and torch.equal(o[1], torch.zeros_like(o[1]))
    assert rel_rms(o, ref) < (1e-5 if dtype == torch.float32 else 4e-3)
    used = [5, 2, 7]
    assert rel_rms(states[used], ref_states[used]) < (1e-5 if state_dtype == torch.float32 else 1e-3)
    unused = [s for s in range(NUM_SLOTS) if s not in used]
    assert torch.equal(states[unused], states0[unused])


def decode_inputs(B, H, HV, K, V, W, L, dtype, state_dtype, bias, seed=0):
    """gdn_decode arguments, with mixed_qkv, z and a, b as views of one projection output (as in the model)."""
    gen = torch.Generator().manual_seed(seed)
    D = 2 * H * K + HV * V
    qkvz = torch.randn(B, D + HV * V, generator=gen).to(dtype)
    ba = torch.randn(B, 2 * HV, generator=gen).to(dtype)
    return dict(
        mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), a=ba[:, HV:], b=ba[:, :HV],
        conv_weight=(0.5 * torch.randn(D, W, generator=gen)).to(dtype),
        conv_bias=(0.1 * torch.randn(D, generator=gen)).to(dtype) if bias else None,
        conv_states=torch.randn(NUM_SLOTS, L, D, generator=gen).to(dtype),
        A_log=torch.log(torch.empty(HV).uniform_(1, 16, generator=gen)),
        dt_bias=torch.randn(HV, generator=gen).to(dtype),
        norm_weight=(1 + 0.1 * torch.randn(V, generator=gen)).to(dtype), norm_eps=1e-6, scale=K ** -0.5,
        ssm_states=(0.1 * torch.randn(NUM_SLOTS, HV, K, V, generator=gen)).to(state_dtype),
        state_indices=torch.tensor([5, -1, 2, 7, 0, 8][:B], dtype=torch.int32), use_qk_l2norm=True,
    )


def naive_decode(x: dict) -> torch.Tensor:
    """The decode step from the fp32 references, one op after the other (mutates x's caches)."""
    B, D = x["mixed_qkv"].shape
    HV, K, V = x["ssm_states"].shape[1:]
    H = (D - HV * V) // (2 * K)
    bias = None if x["conv_bias"] is None else x["conv_bias"].float()
    y = naive_causal_conv1d_update(x["mixed_qkv"].float(), x["conv_weight"].float(), bias, x["conv_states"],
                                   x["state_indices"], True)
    g, beta = naive_gdn_gating(x["A_log"], x["a"].float(), x["b"].float(), x["dt_bias"].float())
    o = naive_fused_recurrent_gated_delta_rule(y[:, :H * K].reshape(B, H, K), y[:, H * K:2 * H * K].reshape(B, H, K),
                                               y[:, 2 * H * K:].reshape(B, HV, V), g, beta, x["scale"],
                                               x["ssm_states"], x["state_indices"], True)
    return naive_gated_rms_norm(o, x["z"].float(), x["norm_weight"].float(), x["norm_eps"])


def clone(x: dict) -> dict:
    return {n: (t.clone() if torch.is_tensor(t) and n.endswith("_states") else t) for n, t in x.items()}


def upcast(x: dict) -> dict:
    return {n: (t.float() if torch.is_tensor(t) and t.is_floating_point() else t) for n, t in x.items()}


DECODE_CASES = [
    # (B, H, HV, K, V, W, L, dtype, state_dtype, bias)
    (4, 2, 4, 32, 32, 4, 3, torch.float32, torch.float32, False),
    (4, 2, 4, 32, 16, 4, 5, torch.float32, torch.bfloat16, True),  # a wider rolling conv state (speculative)
    (3, 1, 2, 16, 16, 3, 2, torch.float32, torch.float32, True),  # W = 3: the generic conv loop
    (4, 2, 4, 128, 128, 4, 3, torch.bfloat16, torch.float32, False),  # Qwen3-Next's head dims
    (6, 2, 4, 64, 64, 4, 3, torch.bfloat16, torch.bfloat16, False),
]


@pytest.mark.parametrize(("B", "H", "HV", "K", "V", "W", "L", "dtype", "state_dtype", "bias"),
                         [pytest.param(*c, id=f"B{c[0]}-H{c[1]}-HV{c[2]}-K{c[3]}-V{c[4]}-W{c[5]}-L{c[6]}"
                                              f"-{str(c[7])[6:]}-state_{str(c[8])[6:]}{'-bias' if c[9] else ''}")
                          for c in DECODE_CASES])
def test_gdn_decode(cpu_path, B, H, HV, K, V, W, L, dtype, state_dtype, bias):
    x = decode_inputs(B, H, HV, K, V, W, L, dtype, state_dtype, bias)
    ref_x = clone(upcast(x))
    ref = naive_decode(ref_x)
    run = clone(x)
    out = ops.gdn_decode(**run)

    assert out.shape == (B, HV, V) and out.dtype == dtype
    padded = x["state_indices"] < 0
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))
    live = ~padded
    used = x["state_indices"][live].long()
    unused = [s for s in range(NUM_SLOTS) if s not in used.tolist()]
    for name in ("conv_states", "ssm_states"):
        assert torch.equal(run[name][unused], x[name][unused]), f"{name}: an unused slot changed"
    assert rel_rms(run["conv_states"][used], ref_x["conv_states"][used]) < 1e-6
    if dtype == torch.float32:
        assert rel_rms(out[live], ref[live]) < 1e-5
        state_tol = 1e-5 if state_dtype == torch.float32 else 2e-3
        assert rel_rms(run["ssm_states"][used], ref_x["ssm_states"][used]) < state_tol
    else:  # bf16: within twice the error of the same step composed of PyTorch's bf16-rounding ops
        composed_x = clone(x)
        composed = ops.gated_rms_norm(*_composed(composed_x), x["norm_weight"], x["norm_eps"])
        assert rel_rms(out[live], ref[live]) <= 2 * rel_rms(composed[live], ref[live]) + 1e-4
        state_err = rel_rms(composed_x["ssm_states"][used], ref_x["ssm_states"][used])
        assert rel_rms(run["ssm_states"][used], ref_x["ssm_states"][used]) <= 2 * state_err + 1e-4


def _composed(x: dict):
    """The decode step from the base ops, up to the norm: (o, z)."""
    B, D = x["mixed_qkv"].shape
    HV, K, V = x["ssm_states"].shape[1:]
    H = (D - HV * V) // (2 * K)
    y = ops.causal_conv1d_update(x["mixed_qkv"], x["conv_weight"], x["conv_bias"], x["conv_states"],
                                 x["state_indices"], True)
    g, beta = ops.gdn_gating(x["A_log"], x["a"], x["b"], x["dt_bias"])
    o = ops.fused_recurrent_gated_delta_rule(y[:, :H * K].reshape(B, H, K), y[:, H * K:2 * H * K].reshape(B, H, K),
                                             y[:, 2 * H * K:].reshape(B, HV, V), g, beta, x["scale"],
                                             x["ssm_states"], x["state_indices"], True)
    return o, x["z"]


def test_gdn_decode_matches_composition():
    """The C++ step equals the base ops composed (both round the conv output and o to bf16 the same way)."""
    if not cpu_ext.available():
        pytest.skip("the C++ CPU kernels are not built here")
    x = decode_inputs(4, 2, 4, 128, 128, 4, 3, torch.bfloat16, torch.float32, False)
    fused, composed = clone(x), clone(x)
    out = ops.gdn_decode(**fused)
    ref = ops.gated_rms_norm(*_composed(composed), x["norm_weight"], x["norm_eps"])
    assert rel_rms(out, ref) < 2e-3  # a rare 1-ulp flip of a bf16 rounding
    assert torch.equal(fused["conv_states"], composed["conv_states"])
    assert rel_rms(fused["ssm_states"], composed["ssm_states"]) < 1e-6

