"""Shared by the op tests: the error measure, input builders, state checks, and the checks each op runs on every
device. Notation: the qwen3next_kernels package docstring.

A device is "cpu" (the CPU op, torch.ops.qwen3next.*), "interpret" (our Triton kernel on CPU tensors under
TRITON_INTERPRET=1, in the worker process of conftest.py's `run`) or "cuda:<backend>" (the op on CUDA tensors with
that backend forced through QWEN3NEXT_KERNELS: every backend of qwen3next_kernels.backends runs the same checks).
References always run on CPU copies; outputs and caches are compared after the run.
"""
import contextlib
import functools
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from qwen3next_kernels import backends
from qwen3next_kernels.conv import naive_causal_conv1d_fwd, naive_causal_conv1d_update, naive_causal_conv1d_verify
from qwen3next_kernels.gated_delta_rule import (naive_fused_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule,
                                                naive_recurrent_gated_delta_rule_verify)
from qwen3next_kernels.gating import naive_gdn_gating
from qwen3next_kernels.norm import naive_gated_rms_norm

QWEN_D = 2 * 16 * 128 + 32 * 128  # conv channels D = 2 H K + HV V
LENS = [1, 63, 64, 65, 1000]  # sequence lengths of the CUDA prefill checks
GATES = ["g_near_0", "g_very_negative", "beta_near_0", "beta_near_1"]


def seed_and_nan_fill() -> None:
    """Fixed seed, and torch.empty returns NaN-filled memory, so an output the kernel leaves unwritten fails loudly."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True


def fresh_state(check, *args, **kwargs):
    """check(*args, **kwargs) after seed_and_nan_fill (in the interpreter's worker)."""
    seed_and_nan_fill()
    return check(*args, **kwargs)


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error of x against ref, in fp32 on CPU."""
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def cu_seqlens(lens) -> torch.Tensor:
    return torch.tensor([0] + list(lens), dtype=torch.int32).cumsum(0, dtype=torch.int32)


def i32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype)[6:]


def devices(op: str, cpu: bool = True, interpret: bool = True, cuda: bool = True) -> list:
    """pytest params of the devices op runs on; CUDA: one per backend, skipped with the reason where it cannot run."""
    params = [pytest.param("cpu", id="cpu")] if cpu else []
    if interpret:
        params.append(pytest.param("interpret", id="interpret", marks=pytest.mark.skipif(
            importlib.util.find_spec("triton") is None, reason="needs triton (the interpreter)")))
    for backend in backends._tables()[op] if cuda else ():
        marks = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
                 pytest.mark.skipif(not backends.installed(backend),
                                    reason=f"backend {backend} needs {backends.LIBRARIES[backend]}, not installed")]
        params.append(pytest.param(f"cuda:{backend}", id=f"cuda-{backend}", marks=marks))
    return params


def cuda_devices(op: str) -> list:
    return devices(op, cpu=False, interpret=False)


@contextlib.contextmanager
def forced_backend(op: str, backend: str):
    """Registers backend as op's CUDA kernel (QWEN3NEXT_KERNELS=op=backend); the default choice again after."""
    previous = os.environ.get(backends.FORCE_ENV)
    os.environ[backends.FORCE_ENV] = f"{op}={backend}"
    try:
        backends.register()
        yield
    finally:
        if previous is None:
            del os.environ[backends.FORCE_ENV]
        else:
            os.environ[backends.FORCE_ENV] = previous
        backends.register()


@contextlib.contextmanager
def op_on(op: str, device: str):
    """(the callable under test, the device of its tensors) for op on device."""
    if device == "cpu":
        yield getattr(torch.ops.qwen3next, op), "cpu"
    elif device == "interpret":
        assert os.environ.get("TRITON_INTERPRET") == "1", "interpreted checks run in conftest.py's worker"
        yield backends.resolve(backends._tables()[op]["triton"]), "cpu"
    else:
        with forced_backend(op, device.removeprefix("cuda:")):
            yield getattr(torch.ops.qwen3next, op), "cuda"


def lowp_slack(device: str) -> int:
    """The CPU interpreter truncates fp32 -> bf16 where the GPU rounds to nearest: bf16 allowances triple there."""
    return 3 if device == "interpret" else 1


def out_tol(dtype: torch.dtype, device: str) -> float:
    return 2e-5 if dtype == torch.float32 else 1e-2 * lowp_slack(device)


def state_tol(state_dtype: torch.dtype, device: str, fp32: float) -> float:
    return fp32 if state_dtype == torch.float32 else 4e-3 * lowp_slack(device)


def prefill_slots(lens, states0: torch.Tensor, gen: torch.Generator):
    """(cu_seqlens, state_indices from slot_map, has_initial_state: every third sequence starts from zeros) of a
    prefill batch; the slots of the sequences that start from zeros are filled with NaN (must not be read)."""
    N = len(lens)
    idx = slot_map(N, states0.shape[0], gen)
    has_init = torch.tensor([n % 3 != 2 for n in range(N)])
    for n in range(N):
        if idx[n] >= 0 and not has_init[n]:
            states0[idx[n]] = float("nan")
    return cu_seqlens(lens), idx, has_init


def slot_map(N: int, S: int, gen: torch.Generator, pad: bool = True) -> torch.Tensor:
    """N distinct slots of S in random order; with pad, one entry (the second) is -1."""
    idx = torch.randperm(S, generator=gen)[:N].to(torch.int32)
    if pad and N > 2:
        idx[1] = -1
    return idx


def assert_untouched(states: torch.Tensor, states0: torch.Tensor, used) -> None:
    """Every slot not in used is bit for bit what it was (NaN included)."""
    states = states.cpu()
    for s in range(states.shape[0]):
        if s not in used:
            torch.testing.assert_close(states[s], states0[s], rtol=0, atol=0, equal_nan=True, msg=f"slot {s} changed")


def assert_states(states: torch.Tensor, ref_states: torch.Tensor, states0: torch.Tensor, idx: torch.Tensor, tol):
    """Written slots match the reference; every other slot is bit for bit untouched (NaN included)."""
    used = [int(s) for s in idx if s >= 0]
    err = rel_rms(states.cpu()[used], ref_states[used])
    assert err < tol, err
    assert_untouched(states, states0, used)


def assert_padded_zero(out: torch.Tensor, cu: torch.Tensor, first_slots: torch.Tensor) -> None:
    """The tokens of the sequences with slot -1 are zeros."""
    for n in range(len(first_slots)):
        if first_slots[n] < 0:
            assert (out[cu[n]:cu[n + 1]] == 0).all(), f"padded sequence {n} has non-zero outputs"


def upcast(x):
    """fp32 copies of the floating tensors of a dict or list (the rest passes through)."""
    f = lambda t: t.float().clone() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return {n: f(t) for n, t in x.items()} if isinstance(x, dict) else [f(t) for t in x]


def assert_near_reference(out, ref, fp32_ref, dtype, state_dtype, device):
    """fp32 runs match the CPU op closely; low-precision runs may be off by at most twice the CPU op's own error
    against the fp32 computation on the same (rounded) inputs, whose bf16 roundings fall elsewhere."""
    if dtype == torch.float32 and state_dtype == torch.float32:
        assert rel_rms(out, ref) < out_tol(dtype, device), rel_rms(out, ref)
        return
    ref32 = fp32_ref()
    err, ref_err = rel_rms(out, ref32), rel_rms(ref, ref32)
    assert err <= 2 * lowp_slack(device) * ref_err + 1e-4, (err, ref_err)


def conv_inputs(T, D, W, L, dtype, state_dtype, bias, strided, S=9, seed=0):
    """x [T, D] (a row-strided view when strided), weight [D, W], bias [D] or None, conv_states [S, L, D]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D + 8 if strided else D, generator=gen).to(dtype)[:, :D]
    weight = (0.5 * torch.randn(D, W, generator=gen)).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    states = torch.randn(S, L, D, generator=gen).to(state_dtype)
    return x, weight, b, states


def qkv_g_beta(T, H, HV, K, V, dtype, gates="random", S=9, state_dtype=torch.float32, seed=0):
    """q, k [T, H, K], v [T, HV, V], g, beta [T, HV] (fp32, drawn directly) and ssm_states [S, HV, K, V]."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, K, generator=gen).to(dtype)
    k = torch.randn(T, H, K, generator=gen).to(dtype)
    v = torch.randn(T, HV, V, generator=gen).to(dtype)
    g = F.logsigmoid(torch.randn(T, HV, generator=gen))
    beta = torch.rand(T, HV, generator=gen)
    if gates == "g_near_0":
        g = torch.full((T, HV), -1e-6)
    elif gates == "g_-20":
        g = -20 - torch.rand(T, HV, generator=gen)
    elif gates == "beta_near_0":
        beta = torch.full((T, HV), 1e-6)
    elif gates == "beta_near_1":
        beta = torch.full((T, HV), 1 - 1e-6)
    states = (0.1 * torch.randn(S, HV, K, V, generator=torch.Generator().manual_seed(1))).to(state_dtype)
    return q, k, v, g, beta, states


def gated_inputs(T, H, HV, K, V, dtype, gates, gen):
    """q, k, v and the gates from the raw a, b through naive_gdn_gating: (q, k, v, a, b, A_log, dt_bias, g, beta)."""
    q = torch.randn(T, H, K, generator=gen).to(dtype)
    k = torch.randn(T, H, K, generator=gen).to(dtype)
    v = torch.randn(T, HV, V, generator=gen).to(dtype)
    a = 2 * torch.randn(T, HV, generator=gen)
    b = 2 * torch.randn(T, HV, generator=gen)
    A_log = torch.log(torch.rand(HV, generator=gen) * 15 + 1)
    dt_bias = torch.rand(HV, generator=gen)
    if gates == "g_near_0":
        a = torch.full((T, HV), -40.0)  # softplus(-40) ~ 4e-18
    elif gates == "g_very_negative":
        a = 30 + torch.rand(T, HV, generator=gen)  # g ~ -exp(A_log) * 30
    elif gates == "beta_near_0":
        b = torch.full((T, HV), -16.0)
    elif gates == "beta_near_1":
        b = torch.full((T, HV), 16.0)
    g, beta = naive_gdn_gating(A_log, a, b, dt_bias)
    return q, k, v, a, b, A_log, dt_bias, g, beta


def decode_inputs(B, H, HV, K, V, dtype, state_dtype, gen, L=3, W=4, bias=False):
    """gdn_decode arguments, with mixed_qkv, z and a, b as views of one projection output (as in the model)."""
    D = 2 * H * K + HV * V
    S = B + 3
    qkvz = torch.randn(B, D + HV * V, generator=gen).to(dtype)
    ba = 2 * torch.randn(B, 2 * HV, generator=gen).to(dtype)
    return dict(
        mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), a=ba[:, HV:], b=ba[:, :HV],
        conv_weight=(0.5 * torch.randn(D, W, generator=gen)).to(dtype),
        conv_bias=(0.1 * torch.randn(D, generator=gen)).to(dtype) if bias else None,
        conv_states=torch.randn(S, L, D, generator=gen).to(dtype),
        A_log=torch.log(torch.rand(HV, generator=gen) * 15 + 1), dt_bias=torch.rand(HV, generator=gen),
        norm_weight=(1 + 0.1 * torch.randn(V, generator=gen)).to(dtype), norm_eps=1e-6, scale=K ** -0.5,
        ssm_states=(0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype),
        state_indices=slot_map(B, S, gen), use_qk_l2norm=True,
    )


def spec_batch(N: int, Q: int, gen: torch.Generator, accept_past_q: bool = False):
    """Token counts (1..Q) and num_accepted a (>= 1) of N verification sequences: the first two have Q tokens, with
    a = 1 and a = Q, the last Q tokens; the rest draw their count, and all but the first two a, at random. a <= the
    sequence's count unless accept_past_q (a <= Q then)."""
    lens, accepted = [], []
    for n in range(N):
        Qn = Q if n < 2 or n == N - 1 else int(torch.randint(1, Q + 1, (1,), generator=gen))
        a = (1, Q)[n] if n < 2 else int(torch.randint(1, (Q if accept_past_q else Qn) + 1, (1,), generator=gen))
        lens.append(Qn)
        accepted.append(a)
    return lens, i32(accepted)


def opcheck_args(op: str) -> list[tuple]:
    """Small CPU argument sets of op, padded slots included where the op takes slots: for opcheck and smoke runs."""
    if op == "causal_conv1d_fwd":
        x, weight, b, states = conv_inputs(70, 16, 4, 3, torch.float32, torch.float32, True, True)
        return [(x, weight, b, states, cu_seqlens([65, 5]), i32([5, -1]), torch.tensor([True, False]), True),
                (x, weight, None, states, cu_seqlens([70]), i32([2]), torch.tensor([False]), False)]
    if op == "causal_conv1d_update":
        x, weight, b, states = conv_inputs(3, 16, 4, 3, torch.bfloat16, torch.bfloat16, True, False)
        return [(x, weight, b, states, i32([5, -1, 2]), True)]
    if op == "causal_conv1d_verify":
        x, weight, _, states = conv_inputs(4, 8, 4, 5, torch.float32, torch.float32, False, False, S=12)
        return [(x, weight, None, states, cu_seqlens([3, 1]), i32([2, 5]), i32([2, 1]), True)]
    if op == "gdn_gating":
        return [gating_inputs(7, 4, torch.bfloat16, False)]
    if op == "gated_rms_norm":
        return [(*norm_inputs(7, 2, 16, torch.bfloat16), 1e-6)]
    if op == "gdn_decode":
        gen = torch.Generator().manual_seed(0)
        return [tuple(decode_inputs(3, 1, 2, 16, 16, torch.bfloat16, torch.float32, gen, bias=True).values())]
    if op == "chunk_gated_delta_rule":
        q, k, v, g, beta, states = qkv_g_beta(70, 1, 2, 16, 16, torch.float32)
        return [(q, k, v, g, beta, 0.25, states, cu_seqlens([65, 5]), i32([5, 2]), torch.tensor([True, False]), True)]
    if op == "fused_recurrent_gated_delta_rule":
        q, k, v, g, beta, states = qkv_g_beta(3, 1, 2, 16, 16, torch.bfloat16, state_dtype=torch.bfloat16)
        return [(q, k, v, g, beta, 0.25, states, i32([5, -1, 2]), True)]
    assert op == "recurrent_gated_delta_rule_verify", op
    q, k, v, g, beta, states = qkv_g_beta(4, 2, 4, 16, 8, torch.float32, S=12)
    return [(q, k, v, g, beta, 0.25, states, cu_seqlens([3, 1]), i32([[1, 2, 3], [4, 5, 6]]), i32([2, 1]), True)]


def norm_inputs(T, HV, V, dtype, seed=0):
    """x, z [T, HV, V], weight [V]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, HV, V, generator=gen).to(dtype)
    z = torch.randn(T, HV, V, generator=gen).to(dtype)
    weight = (1 + 0.1 * torch.randn(V, generator=gen)).to(dtype)
    return x, z, weight


def gating_inputs(T, HV, dtype, extreme, seed=0):
    """A_log [HV] fp32, a, b [T, HV] (row-strided views, as from a fused projection), dt_bias [HV]."""
    gen = torch.Generator().manual_seed(seed)
    A_log = torch.randn(HV, generator=gen)
    dt_bias = torch.randn(HV, generator=gen).to(dtype)
    ba = torch.randn(T, 2 * HV, generator=gen) * (30 if extreme else 3)  # extreme: past softplus' threshold of 20
    b, a = ba.to(dtype).split(HV, dim=1)
    return A_log, a, b, dt_bias


def conv_rows(T, width, D, W, L, S, dtype, state_dtype, bias, gen):
    """x_rows [T, width] (x is a row-strided view of it, as from a projection), weight [D, W], bias [D] or None,
    conv_states [S, L, D]."""
    x_rows = torch.randn(T, width, generator=gen).to(dtype)
    weight = torch.randn(D, W, generator=gen).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    return x_rows, weight, b, torch.randn(S, L, D, generator=gen).to(state_dtype)


def check_causal_conv1d_fwd(device, lens, D, L=3, dtype=torch.float32, state_dtype=torch.float32, bias=True,
                            silu=True, seed=0, W=4, **launch):
    """launch: run our Triton launcher with these arguments (rows, BT, BD; interpret or cuda:triton) instead of
    the op."""
    gen = torch.Generator().manual_seed(seed)
    N, T = len(lens), sum(lens)
    S = N + 3
    x_rows, weight, b, states0 = conv_rows(T, D + 16, D, W, L, S, dtype, state_dtype, bias, gen)
    cu, idx, has_init = prefill_slots(lens, states0, gen)
    impl = None
    if launch:
        from qwen3next_kernels.conv.triton import causal_conv1d_fwd_triton
        impl = functools.partial(causal_conv1d_fwd_triton, **launch)
    check_conv_varlen("causal_conv1d_fwd", naive_causal_conv1d_fwd, device, x_rows, weight, b, states0, cu, idx,
                      has_init, dtype, state_dtype, silu, impl)


def check_causal_conv1d_update(device, B, D, L=3, dtype=torch.float32, state_dtype=torch.float32, bias=True,
                               silu=True, seed=0, **launch):
    """launch: run our Triton launcher with these arguments (BD, num_warps; interpret or cuda:triton) instead of the
    op."""
    gen = torch.Generator().manual_seed(seed)
    S, W = B + 3, 4
    x_rows, weight, b, states0 = conv_rows(B, D + 8, D, W, L, S, dtype, state_dtype, bias, gen)
    idx = slot_map(B, S, gen)
    ref_states = states0.clone()
    ref = naive_causal_conv1d_update(x_rows[:, :D], weight, b, ref_states, idx, silu)
    with op_on("causal_conv1d_update", device) as (op, dev):
        if launch:
            from qwen3next_kernels.conv.triton import causal_conv1d_update_triton
            op = functools.partial(causal_conv1d_update_triton, **launch)
        states = states0.to(dev, copy=True)  # a copy on the CPU too: states0 stays the untouched reference
        out = op(x_rows.to(dev)[:, :D], weight.to(dev), None if b is None else b.to(dev), states, idx.to(dev), silu)
    assert out.shape == (B, D) and out.dtype == dtype
    assert rel_rms(out, ref) < out_tol(dtype, device), rel_rms(out, ref)
    assert (out[idx.to(dev) < 0] == 0).all()
    assert_states(states, ref_states, states0, idx, state_tol(state_dtype, device, 1e-6))


def check_causal_conv1d_verify(device, N, k, D, dtype=torch.float32, state_dtype=torch.float32, bias=True,
                               silu=True, seed=0):
    """k speculative tokens: Q = k + 1 tokens at most per sequence, L = W - 1 + k."""
    gen = torch.Generator().manual_seed(seed)
    W, Q = 4, k + 1
    L = W - 1 + k
    S = N + 3
    lens, accepted = spec_batch(N, Q, gen)
    T = sum(lens)
    cu = cu_seqlens(lens)
    x_rows, weight, b, states0 = conv_rows(T, D + 16, D, W, L, S, dtype, state_dtype, bias, gen)
    idx = slot_map(N, S, gen)
    for n in range(N):
        if idx[n] >= 0:
            states0[idx[n], :int(accepted[n]) - 1] = float("nan")  # rows before the window: neither read nor kept
    check_conv_varlen("causal_conv1d_verify", naive_causal_conv1d_verify, device, x_rows, weight, b, states0, cu,
                      idx, accepted, dtype, state_dtype, silu)


def check_conv_varlen(op, naive, device, x_rows, weight, b, states0, cu, idx, per_seq, dtype, state_dtype, silu,
                      impl=None):
    """Runs the varlen conv op on x = x_rows[:, 8:8 + D] against its naive reference; per_seq is has_initial_state
    (causal_conv1d_fwd) or num_accepted (causal_conv1d_verify)."""
    T, D = x_rows.shape[0], weight.shape[0]
    ref_states = states0.clone()
    ref = naive(x_rows[:, 8:8 + D], weight, b, ref_states, cu, idx, per_seq, silu)
    with op_on(op, device) as (fn, dev):
        fn = impl or fn
        states = states0.to(dev, copy=True)
        out = fn(x_rows.to(dev)[:, 8:8 + D], weight.to(dev), None if b is None else b.to(dev), states, cu.to(dev),
                 idx.to(dev), per_seq.to(dev), silu)
    assert out.shape == (T, D) and out.dtype == dtype and out.device.type == dev
    assert out.isfinite().all()
    assert rel_rms(out, ref) < out_tol(dtype, device), rel_rms(out, ref)
    assert_padded_zero(out, cu, idx)
    assert_states(states, ref_states, states0, idx, state_tol(state_dtype, device, 1e-6))


def check_gdn_gating(device, T, HV, dtype, extreme, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A_log = torch.randn(HV, generator=gen)
    dt_bias = torch.randn(HV, generator=gen).to(dtype)
    ba = (torch.randn(T, 2 * HV, generator=gen) * (30 if extreme else 3)).to(dtype)
    g_ref, beta_ref = naive_gdn_gating(A_log, ba[:, HV:], ba[:, :HV], dt_bias)
    with op_on("gdn_gating", device) as (op, dev):
        bad = ba.to(dev)
        g, beta = op(A_log.to(dev), bad[:, HV:], bad[:, :HV], dt_bias.to(dev))
    for out, ref in ((g, g_ref), (beta, beta_ref)):
        assert out.shape == (T, HV) and out.dtype == torch.float32 and out.isfinite().all()
        assert rel_rms(out, ref) < 1e-6, rel_rms(out, ref)


def check_gated_rms_norm(device, T, HV, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xz = torch.randn(T, HV, 2, V, generator=gen).to(dtype)  # x and z interleaved: strided views
    weight = (1 + 0.1 * torch.randn(V, generator=gen)).to(dtype)
    ref = naive_gated_rms_norm(xz[:, :, 0], xz[:, :, 1], weight, 1e-6)
    with op_on("gated_rms_norm", device) as (op, dev):
        xzd = xz.to(dev)
        out = op(xzd[:, :, 0], xzd[:, :, 1], weight.to(dev), 1e-6)
    assert out.shape == (T, HV, V) and out.dtype == dtype and out.is_contiguous()
    assert rel_rms(out, ref) < out_tol(dtype, device), rel_rms(out, ref)


def check_chunk_gated_delta_rule(device, lens, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32,
                                 use_qk_l2norm=True, gates="random", tol=None, seed=0, BV=None):
    """BV: run our Triton launcher with that value block (interpret or cuda:triton) instead of the op."""
    gen = torch.Generator().manual_seed(seed)
    N, T = len(lens), sum(lens)
    S = N + 3
    q, k, v, a, b, A_log, dt_bias, g, beta = gated_inputs(T, H, HV, K, V, dtype, gates, gen)
    if not use_qk_l2norm:
        q, k = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k.float(), dim=-1).to(dtype)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    cu, idx, has_init = prefill_slots(lens, states0, gen)
    scale = K ** -0.5
    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, scale, ref_states, cu, idx,
                                           has_init, use_qk_l2norm)
    with op_on("chunk_gated_delta_rule", device) as (op, dev):
        if BV is not None:
            from qwen3next_kernels.gated_delta_rule.triton_chunk import chunk_gated_delta_rule_fwd_triton
            op = functools.partial(chunk_gated_delta_rule_fwd_triton, BV=BV)
        states = states0.to(dev, copy=True)
        o = op(q.to(dev), k.to(dev), v.to(dev), g.to(dev), beta.to(dev), scale, states, cu.to(dev), idx.to(dev),
               has_init.to(dev), use_qk_l2norm)
    assert o.shape == (T, HV, V) and o.dtype == dtype
    assert o.isfinite().all()
    tol = tol or out_tol(dtype, device)
    assert rel_rms(o, ref) < tol, rel_rms(o, ref)
    assert_padded_zero(o, cu, idx)
    assert_states(states, ref_states, states0, idx, max(tol, state_tol(state_dtype, device, 0)))


def check_fused_recurrent_gated_delta_rule(device, B, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32,
                                           gates="random", seed=0):
    gen = torch.Generator().manual_seed(seed)
    S = B + 3
    q, k, v, _, _, _, _, g, beta = gated_inputs(B, H, HV, K, V, dtype, gates, gen)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    idx = slot_map(B, S, gen)
    ref_states = states0.clone()
    ref = naive_fused_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, K ** -0.5, ref_states,
                                                 idx, True)
    with op_on("fused_recurrent_gated_delta_rule", device) as (op, dev):
        states = states0.to(dev, copy=True)
        o = op(q.to(dev), k.to(dev), v.to(dev), g.to(dev), beta.to(dev), K ** -0.5, states, idx.to(dev), True)
    assert o.shape == (B, HV, V) and o.dtype == dtype
    assert rel_rms(o, ref) < out_tol(dtype, device), rel_rms(o, ref)
    assert (o[idx.to(dev) < 0] == 0).all()
    assert_states(states, ref_states, states0, idx, state_tol(state_dtype, device, 1e-5))


def check_gdn_decode(device, B, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, seed=0, steps=1,
                     graph=False, **launch):
    """Against the CPU op (the C++ kernel or the base ops composed; test_cpu_ext.py ties it to the references).
    launch: run our Triton launcher with these arguments (BV, num_warps) instead of the op. steps: that many
    steps back to back on the same slots (the output compared is the last one's). graph: the steps as one CUDA
    graph."""
    gen = torch.Generator().manual_seed(seed)
    x = decode_inputs(B, H, HV, K, V, dtype, state_dtype, gen)
    ref_x = {n: (t.clone() if torch.is_tensor(t) else t) for n, t in x.items()}
    cpu_op = torch.ops.qwen3next.gdn_decode

    def run_steps(op, kwargs):
        for _ in range(steps):
            out = op(**kwargs)
        return out
    ref = run_steps(cpu_op, ref_x)
    D = x["mixed_qkv"].shape[1]
    with op_on("gdn_decode", device) as (op, dev):
        if launch:
            from qwen3next_kernels.gated_delta_rule.triton_decode import gdn_decode_triton
            op = functools.partial(gdn_decode_triton, **launch)
        qkvz = torch.cat([x["mixed_qkv"], x["z"].reshape(B, -1)], 1).to(dev)
        ba = torch.cat([x["b"], x["a"]], 1).to(dev)
        dev_x = {n: (t.to(dev, copy=True) if torch.is_tensor(t) else t) for n, t in x.items()}
        dev_x.update(mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), b=ba[:, :HV], a=ba[:, HV:])
        step = functools.partial(run_steps, op)
        out = replay_as_cuda_graph(step, dev_x, ("ssm_states", "conv_states")) if graph else step(dev_x)
    assert out.shape == (B, HV, V) and out.dtype == dtype
    assert_near_reference(out, ref, lambda: run_steps(cpu_op, upcast(x)), dtype, state_dtype, device)
    idx = x["state_indices"]
    assert (out[idx.to(dev) < 0] == 0).all()
    assert_states(dev_x["ssm_states"], ref_x["ssm_states"], x["ssm_states"], idx,
                  state_tol(state_dtype, device, 1e-5))
    assert_states(dev_x["conv_states"], ref_x["conv_states"], x["conv_states"], idx, 1e-6)


def replay_as_cuda_graph(step, kwargs: dict, mutated: tuple[str, ...]):
    """step(kwargs) as a CUDA graph: warmed up and captured on copies of the mutated tensors, replayed once the
    inputs are copied in, the results copied back. The empty tensors are not NaN-filled in the graph (as in
    vLLM's)."""
    static = kwargs | {n: kwargs[n].clone() for n in mutated}
    step(static)  # compiles outside the capture
    torch.use_deterministic_algorithms(False)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(static)
    for n in mutated:
        static[n].copy_(kwargs[n])
    graph.replay()
    for n in mutated:
        kwargs[n].copy_(static[n])
    torch.cuda.synchronize()
    return out


def check_recurrent_gated_delta_rule_verify(device, N, k, H, HV, K, V, dtype=torch.float32,
                                            state_dtype=torch.float32, gates="random", use_qk_l2norm=True, seed=0,
                                            BV=None):
    """k speculative tokens: C = Q = k + 1 slots per sequence, up to Q tokens, a <= C (past the sequence's count
    too: a slot only read). Sequence 1 is padding (a row of -1); the last one has a -1 among its written columns
    (that write is skipped). The slots of a sequence other than the one it reads hold NaN. BV: run our Triton
    launcher with that value block (interpret or cuda:triton) instead of the op."""
    gen = torch.Generator().manual_seed(seed)
    Q = C = k + 1
    S = N * C + 3
    lens, accepted = spec_batch(N, Q, gen, accept_past_q=True)
    T = sum(lens)
    cu = cu_seqlens(lens)
    q, k_, v, _, _, _, _, g, beta = gated_inputs(T, H, HV, K, V, dtype, gates, gen)
    if not use_qk_l2norm:
        q, k_ = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k_.float(), dim=-1).to(dtype)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    idx = torch.randperm(S, generator=gen)[:N * C].to(torch.int32).view(N, C)
    if N > 2:
        idx[1] = -1
    # the last sequence (Q >= 2 tokens) skips the write of a column past 0 (a -1 there skips the sequence) not read
    skip = 1 if accepted[N - 1] != 2 else (2 if Q > 2 else None)
    if N > 2 and skip is not None:
        idx[N - 1, skip] = -1
    written = []
    for n in range(N):
        if idx[n, 0] < 0:
            continue
        for j in range(C):
            if j != accepted[n] - 1 and idx[n, j] >= 0:
                states0[idx[n, j]] = float("nan")  # must not be read
        written += [int(s) for s in idx[n, :lens[n]] if s >= 0]
    written = torch.tensor(written, dtype=torch.int32)
    scale = K ** -0.5
    # The naive reference writes every column; a -1 among them goes to a scratch slot S here.
    ref_idx = torch.where((idx < 0) & (idx[:, :1] >= 0), S, idx)
    ref_states = torch.cat([states0, torch.zeros(1, HV, K, V, dtype=state_dtype)])
    ref = naive_recurrent_gated_delta_rule_verify(q.float(), k_.float(), v.float(), g, beta, scale, ref_states, cu,
                                                  ref_idx, accepted, use_qk_l2norm)
    ref_states = ref_states[:S]
    with op_on("recurrent_gated_delta_rule_verify", device) as (op, dev):
        if BV is not None:
            op = functools.partial(backends.resolve(backends._tables()["recurrent_gated_delta_rule_verify"]["triton"]), BV=BV)
        # q, k, v as views of one [T, 2 H K + HV V] tensor, as split from the conv output
        qkv = torch.cat([q.reshape(T, -1), k_.reshape(T, -1), v.reshape(T, -1)], 1).to(dev)
        qd, kd, vd = qkv.split([H * K, H * K, HV * V], 1)
        states = states0.to(dev, copy=True)
        o = op(qd.view(T, H, K), kd.view(T, H, K), vd.view(T, HV, V), g.to(dev), beta.to(dev), scale, states,
               cu.to(dev), idx.to(dev), accepted.to(dev), use_qk_l2norm)
    assert o.shape == (T, HV, V) and o.dtype == dtype and o.device.type == dev
    assert o.isfinite().all()
    # a bf16 state: the naive reference rounds it after every token, the kernel only where it writes
    tol = out_tol(dtype, device) if state_dtype == torch.float32 else 1e-2 * lowp_slack(device)
    assert rel_rms(o, ref) < tol, rel_rms(o, ref)
    assert_padded_zero(o, cu, idx[:, 0])
    assert_states(states, ref_states, states0, written, state_tol(state_dtype, device, 1e-5))


def on_devices(op: str, small: dict, qwen: dict, cpu: bool = True) -> list:
    """pytest params (device, case kwargs): the small cases on the CPU op (unless not cpu) and the interpreter, the
    Qwen3-Next-sized ones on every CUDA backend of op."""
    def params(devs, cases):
        return [pytest.param(d.values[0], kw, id=f"{d.id}-{name}", marks=d.marks) for d in devs
                for name, kw in cases.items()]
    return params(devices(op, cpu=cpu, cuda=False), small) + params(cuda_devices(op), qwen)


def triton_devices(op: str) -> list:
    """pytest params of the devices running our Triton kernel of op: the interpreter and cuda:triton."""
    return [p for p in devices(op, cpu=False) if p.values[0] in ("interpret", "cuda:triton")]


def opcheck_params(ops: list[str]) -> list:
    """pytest params (op, device) of torch.library.opcheck: the CPU op and every CUDA backend of each op."""
    return [pytest.param(op, d.values[0], id=f"{op}-{d.id}", marks=d.marks) for op in ops
            for d in devices(op, interpret=False)]


def assert_opcheck(op: str, device: str) -> None:
    """torch.library.opcheck (schema, fake, aliasing) of op on device, on every argument set of opcheck_args."""
    with op_on(op, device) as (_, dev):
        for args in opcheck_args(op):
            args = tuple(a.to(dev) if torch.is_tensor(a) else a for a in args)
            torch.library.opcheck(getattr(torch.ops.qwen3next, op).default, args)


def vk_view(states: torch.Tensor) -> torch.Tensor:
    """The same values as states [S, HV, K, V], in memory laid out [S, HV, V, K] (the CUDA cache layout), seen
    through the transposed view the ops take."""
    return states.transpose(-1, -2).contiguous().transpose(-1, -2)


def check_state_layout(device, op, B, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, seed=0,
                       impl=None):
    """op (or the Triton launcher impl) on states laid out [V, K] against the CPU op on the same values laid out
    [K, V]: outputs within the usual tolerance, every state written where the CPU op writes it, the rest untouched."""
    gen = torch.Generator().manual_seed(seed)
    S, W = 3 * B + 4, 4  # verification needs a slot per token (3 per sequence), plus the null slot
    idx = slot_map(B, S, gen)  # padding included
    D = 2 * H * K + HV * V
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    if op == "gdn_decode":
        args = [torch.randn(B, D, generator=gen).to(dtype), torch.randn(B, HV, V, generator=gen).to(dtype),
                torch.randn(B, HV, generator=gen).to(dtype), torch.randn(B, HV, generator=gen).to(dtype),
                (0.5 * torch.randn(D, W, generator=gen)).to(dtype), None,
                torch.randn(S, W - 1, D, generator=gen).to(dtype), torch.rand(HV, generator=gen) * 2,
                torch.rand(HV, generator=gen), 1 + 0.1 * torch.randn(V, generator=gen), 1e-6, K ** -0.5]
        tail = [idx, True]
    else:
        T = B * (3 if op == "recurrent_gated_delta_rule_verify" else 1)
        args = [torch.randn(T, H, K, generator=gen).to(dtype), torch.randn(T, H, K, generator=gen).to(dtype),
                torch.randn(T, HV, V, generator=gen).to(dtype),
                F.logsigmoid(torch.randn(T, HV, generator=gen)), torch.rand(T, HV, generator=gen), K ** -0.5]
        if op == "fused_recurrent_gated_delta_rule":
            tail = [idx, True]
        elif op == "chunk_gated_delta_rule":
            tail = [torch.arange(0, T + 1, dtype=torch.int32), idx, torch.rand(B, generator=gen) < 0.7, True]
        else:  # verify: 3 tokens per sequence, a slot per token
            slots = torch.randperm(S - 1, generator=gen)[:3 * B].view(B, 3).to(torch.int32) + 1
            slots[idx < 0] = -1
            tail = [torch.arange(0, T + 1, 3, dtype=torch.int32), slots,
                    torch.randint(1, 4, (B,), generator=gen, dtype=torch.int32), True]
    ref_states = states0.clone()
    ref_args = [a.clone() if torch.is_tensor(a) else a for a in args]
    ref = getattr(torch.ops.qwen3next, op)(*ref_args, ref_states, *tail)
    with op_on(op, device) as (fn, dev):
        fn = impl or fn
        moved = [a.to(dev) if torch.is_tensor(a) else a for a in args]
        states = vk_view(states0).to(dev, copy=True)
        assert states.stride()[1:] == (K * V, 1, K)
        out = fn(*moved, states, *[a.to(dev) if torch.is_tensor(a) else a for a in tail])
    tol = out_tol(dtype, device) if dtype != torch.float32 else 1e-4
    assert rel_rms(out, ref) < tol, f"out {rel_rms(out, ref):.2e}"
    s_tol = 1e-5 if state_dtype == torch.float32 else 8e-3
    assert rel_rms(states.cpu(), ref_states) < s_tol, f"states {rel_rms(states.cpu(), ref_states):.2e}"
    if op == "gdn_decode":
        assert torch.equal(moved[6].cpu(), ref_args[6]), "conv states differ"
