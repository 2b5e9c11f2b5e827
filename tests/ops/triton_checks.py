"""Checks of the Triton kernels against the CPU references, shared by the CUDA tests (test_triton_*.py, through
torch.ops on GPU tensors) and the CPU interpreter tests (interpret/, calling the launchers on CPU tensors under
TRITON_INTERPRET=1). References always run on CPU copies; outputs and caches are compared after the run.

T = total tokens, B = decode batch, N = sequences, S = state slots, D = conv channels, W = conv width,
L = conv state length, H = key heads, HV = value heads, K = key head dim, V = value head dim, T1 = tokens per
sequence in a verification step.
"""
import os

import torch
import torch.nn.functional as F

from qwen3next_kernels.conv.naive import naive_causal_conv1d_fwd, naive_causal_conv1d_update
from qwen3next_kernels.conv.verify import naive_causal_conv1d_verify
from qwen3next_kernels.gated_delta_rule.fused_ops import (fused_gdn_decode, gated_delta_rule_verify,
                                                          spec_cache_width)
from qwen3next_kernels.gated_delta_rule.naive import (naive_fused_recurrent_gated_delta_rule,
                                                      naive_recurrent_gated_delta_rule)
from qwen3next_kernels.gated_delta_rule.verify import naive_recurrent_gated_delta_rule_verify
from qwen3next_kernels.gating.naive import naive_gdn_gating
from qwen3next_kernels.norm.naive import naive_gated_rms_norm


# The CPU interpreter truncates fp32 -> bf16 where the GPU rounds to nearest: bf16 allowances triple there.
LOWP_SLACK = 3 if os.environ.get("TRITON_INTERPRET") == "1" else 1


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def out_tol(dtype: torch.dtype) -> float:
    return 2e-5 if dtype == torch.float32 else 1e-2 * LOWP_SLACK


def slot_map(N: int, S: int, gen: torch.Generator, pad: bool = True) -> torch.Tensor:
    """N distinct slots of S in random order; with pad, one entry (the second) is -1."""
    idx = torch.randperm(S, generator=gen)[:N].to(torch.int32)
    if pad and N > 2:
        idx[1] = -1
    return idx


def assert_states(states: torch.Tensor, ref_states: torch.Tensor, states0: torch.Tensor, idx: torch.Tensor, tol):
    """Written slots match the reference; every other slot is bit for bit untouched (NaN included)."""
    states = states.cpu()
    used = [int(s) for s in idx if s >= 0]
    assert rel_rms(states[used], ref_states[used]) < tol, rel_rms(states[used], ref_states[used])
    for s in range(states.shape[0]):
        if s not in used:
            torch.testing.assert_close(states[s], states0[s], rtol=0, atol=0, equal_nan=True)


def upcast(x):
    """fp32 copies of the floating tensors of a dict or list (the rest passes through)."""
    f = lambda t: t.float().clone() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return {n: f(t) for n, t in x.items()} if isinstance(x, dict) else [f(t) for t in x]


def assert_near_reference(out, ref, fp32_ref, dtype, state_dtype):
    """fp32 runs match the CPU op closely; low-precision runs may be off by at most twice the CPU op's own error
    against the fp32 computation on the same (rounded) inputs, whose bf16 roundings fall elsewhere."""
    if dtype == torch.float32 and state_dtype == torch.float32:
        assert rel_rms(out, ref) < out_tol(dtype), rel_rms(out, ref)
        return
    ref32 = fp32_ref()
    err, ref_err = rel_rms(out, ref32), rel_rms(ref, ref32)
    assert err <= 2 * LOWP_SLACK * ref_err + 1e-4, (err, ref_err)


def check_conv_fwd(op, device, lens, D, L=3, dtype=torch.float32, state_dtype=torch.float32, bias=True,
                   silu=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    N, T, W = len(lens), sum(lens), 4
    S = N + 3
    x_rows = torch.randn(T, D + 16, generator=gen).to(dtype)  # x is a row-strided view, as from a projection
    weight = torch.randn(D, W, generator=gen).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    states0 = torch.randn(S, L, D, generator=gen).to(state_dtype)
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    idx = slot_map(N, S, gen)
    has_init = torch.tensor([n % 3 != 2 for n in range(N)])
    for n in range(N):
        if idx[n] >= 0 and not has_init[n]:
            states0[idx[n]] = float("nan")  # must not be read
    ref_states = states0.clone()
    ref = naive_causal_conv1d_fwd(x_rows[:, 8:8 + D], weight, b, ref_states, cu, idx, has_init, silu)
    states = states0.to(device)
    out = op(x_rows.to(device)[:, 8:8 + D], weight.to(device), None if b is None else b.to(device), states,
             cu.to(device), idx.to(device), has_init.to(device), silu)
    assert out.shape == (T, D) and out.dtype == dtype and out.device.type == torch.device(device).type
    assert rel_rms(out, ref) < out_tol(dtype), rel_rms(out, ref)
    for n in range(N):
        if idx[n] < 0:
            assert (out[cu[n]:cu[n + 1]] == 0).all()
    assert_states(states, ref_states, states0, idx, 1e-6 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)


def check_conv_update(op, device, B, D, L=3, dtype=torch.float32, state_dtype=torch.float32, bias=True, silu=True,
                      seed=0):
    gen = torch.Generator().manual_seed(seed)
    S, W = B + 3, 4
    x_rows = torch.randn(B, D + 8, generator=gen).to(dtype)
    weight = torch.randn(D, W, generator=gen).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    states0 = torch.randn(S, L, D, generator=gen).to(state_dtype)
    idx = slot_map(B, S, gen)
    ref_states = states0.clone()
    ref = naive_causal_conv1d_update(x_rows[:, :D], weight, b, ref_states, idx, silu)
    states = states0.to(device)
    out = op(x_rows.to(device)[:, :D], weight.to(device), None if b is None else b.to(device), states,
             idx.to(device), silu)
    assert out.shape == (B, D) and out.dtype == dtype
    assert rel_rms(out, ref) < out_tol(dtype)
    assert (out[idx < 0] == 0).all()
    assert_states(states, ref_states, states0, idx, 1e-6 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)


def check_gating(op, device, T, HV, dtype, extreme, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A_log = torch.randn(HV, generator=gen)
    dt_bias = torch.randn(HV, generator=gen).to(dtype)
    ba = (torch.randn(T, 2 * HV, generator=gen) * (30 if extreme else 3)).to(dtype)
    b, a = ba[:, :HV], ba[:, HV:]
    g_ref, beta_ref = naive_gdn_gating(A_log, a, b, dt_bias)
    bad = ba.to(device)
    g, beta = op(A_log.to(device), bad[:, HV:], bad[:, :HV], dt_bias.to(device))
    for out, ref in ((g, g_ref), (beta, beta_ref)):
        assert out.shape == (T, HV) and out.dtype == torch.float32 and out.isfinite().all()
        assert rel_rms(out, ref) < 1e-6


def check_norm(op, device, T, HV, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xz = torch.randn(T, HV, 2, V, generator=gen).to(dtype)  # x and z interleaved: strided views
    weight = (1 + 0.1 * torch.randn(V, generator=gen)).to(dtype)
    ref = naive_gated_rms_norm(xz[:, :, 0], xz[:, :, 1], weight, 1e-6)
    xzd = xz.to(device)
    out = op(xzd[:, :, 0], xzd[:, :, 1], weight.to(device), 1e-6)
    assert out.shape == (T, HV, V) and out.dtype == dtype and out.is_contiguous()
    assert rel_rms(out, ref) < out_tol(dtype)


def gdr_inputs(T, H, HV, K, V, dtype, gates, gen):
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


def check_chunk(op, device, lens, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, use_qk_l2norm=True,
                gates="random", fused_gating=False, tol=None, seed=0):
    """op is chunk_gated_delta_rule-like, or fused_gdn_prefill-like when fused_gating."""
    gen = torch.Generator().manual_seed(seed)
    N, T = len(lens), sum(lens)
    S = N + 3
    q, k, v, a, b, A_log, dt_bias, g, beta = gdr_inputs(T, H, HV, K, V, dtype, gates, gen)
    if not use_qk_l2norm:
        q, k = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k.float(), dim=-1).to(dtype)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    idx = slot_map(N, S, gen)
    has_init = torch.tensor([n % 3 != 2 for n in range(N)])
    for n in range(N):
        if idx[n] >= 0 and not has_init[n]:
            states0[idx[n]] = float("nan")
    scale = K ** -0.5
    ref_states = states0.clone()
    ref = naive_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, scale, ref_states, cu, idx,
                                           has_init, use_qk_l2norm)
    dev = lambda t: t.to(device)  # noqa: E731
    states = dev(states0)
    if fused_gating:
        o = op(dev(q), dev(k), dev(v), dev(a), dev(b), dev(A_log), dev(dt_bias), scale, states, dev(cu), dev(idx),
               dev(has_init), use_qk_l2norm)
    else:
        o = op(dev(q), dev(k), dev(v), dev(g), dev(beta), scale, states, dev(cu), dev(idx), dev(has_init),
               use_qk_l2norm)
    assert o.shape == (T, HV, V) and o.dtype == dtype
    assert o.isfinite().all()
    tol = tol or out_tol(dtype)
    assert rel_rms(o, ref) < tol, rel_rms(o, ref)
    for n in range(N):
        if idx[n] < 0:
            assert (o[cu[n]:cu[n + 1]] == 0).all()
    assert_states(states, ref_states, states0, idx, max(tol, 4e-3 * LOWP_SLACK if state_dtype != torch.float32 else 0))
    return rel_rms(o, ref)


def check_recurrent(op, device, B, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, gates="random",
                    seed=0):
    gen = torch.Generator().manual_seed(seed)
    S = B + 3
    q, k, v, _, _, _, _, g, beta = gdr_inputs(B, H, HV, K, V, dtype, gates, gen)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    idx = slot_map(B, S, gen)
    ref_states = states0.clone()
    ref = naive_fused_recurrent_gated_delta_rule(q.float(), k.float(), v.float(), g, beta, K ** -0.5, ref_states,
                                                 idx, True)
    states = states0.to(device)
    o = op(q.to(device), k.to(device), v.to(device), g.to(device), beta.to(device), K ** -0.5, states,
           idx.to(device), True)
    assert o.shape == (B, HV, V) and o.dtype == dtype
    assert rel_rms(o, ref) < out_tol(dtype)
    assert (o[idx < 0] == 0).all()
    assert_states(states, ref_states, states0, idx, 1e-5 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)


def decode_inputs(B, H, HV, K, V, dtype, state_dtype, gen, L=3, W=4):
    D = 2 * H * K + HV * V
    S = B + 3
    qkvz = torch.randn(B, D + HV * V, generator=gen).to(dtype)
    ba = 2 * torch.randn(B, 2 * HV, generator=gen).to(dtype)
    return dict(
        mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), a=ba[:, HV:], b=ba[:, :HV],
        conv_weight=(0.5 * torch.randn(D, W, generator=gen)).to(dtype), conv_bias=None,
        conv_states=torch.randn(S, L, D, generator=gen).to(dtype),
        A_log=torch.log(torch.rand(HV, generator=gen) * 15 + 1), dt_bias=torch.rand(HV, generator=gen),
        norm_weight=(1 + 0.1 * torch.randn(V, generator=gen)).to(dtype), norm_eps=1e-6, scale=K ** -0.5,
        ssm_states=(0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype),
        state_indices=slot_map(B, S, gen), use_qk_l2norm=True,
    )


def check_fused_decode(op, device, B, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, seed=0):
    """Against the CPU op, which is the composition of the base ops (each checked against its naive reference)."""
    gen = torch.Generator().manual_seed(seed)
    x = decode_inputs(B, H, HV, K, V, dtype, state_dtype, gen)
    ref_x = {n: (t.clone() if torch.is_tensor(t) else t) for n, t in x.items()}
    ref = fused_gdn_decode(**ref_x)
    qkvz = torch.cat([x["mixed_qkv"], x["z"].reshape(B, -1)], 1).to(device)
    ba = torch.cat([x["b"], x["a"]], 1).to(device)
    dev_x = {n: (t.to(device) if torch.is_tensor(t) else t) for n, t in x.items()}
    D = x["mixed_qkv"].shape[1]
    dev_x.update(mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), b=ba[:, :HV], a=ba[:, HV:])
    out = op(**dev_x)
    assert out.shape == (B, HV, V) and out.dtype == dtype
    assert_near_reference(out, ref, lambda: fused_gdn_decode(**upcast(x)), dtype, state_dtype)
    idx = x["state_indices"]
    assert (out[idx < 0] == 0).all()
    assert_states(dev_x["ssm_states"], ref_x["ssm_states"], x["ssm_states"], idx,
                  1e-5 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)
    assert_states(dev_x["conv_states"], ref_x["conv_states"], x["conv_states"], idx, 1e-6)


def check_verify(op, device, B, T1, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32, seed=0):
    """Against the CPU op (base ops composed); check_verify_semantics ties that to the naive recurrence."""
    gen = torch.Generator().manual_seed(seed)
    S = B + 3
    q, k, v, _, _, _, _, g, beta = gdr_inputs(B * T1, H, HV, K, V, dtype, "random", gen)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    F_ = spec_cache_width(H, HV, K, V)
    cache0 = torch.randn(S, T1, F_, generator=gen)
    cache0[..., H * K:H * K + HV * V] *= 0.1
    cache0[..., H * K + HV * V:] = torch.rand(S, T1, 2 * HV, generator=gen)
    cache0[..., H * K + HV * V:H * K + HV * V + HV] *= -1
    idx = slot_map(B, S, gen)
    nrep = torch.randint(0, T1 + 1, (B,), generator=gen, dtype=torch.int32)
    ref_states, ref_cache = states0.clone(), cache0.clone()
    ref = gated_delta_rule_verify(q, k, v, g, beta, K ** -0.5, ref_states, ref_cache, idx, nrep, True)
    dev = lambda t: t.to(device)  # noqa: E731
    states, cache = dev(states0), dev(cache0)
    o = op(dev(q), dev(k), dev(v), dev(g), dev(beta), K ** -0.5, states, cache, dev(idx), dev(nrep), True)
    assert o.shape == (B * T1, HV, V) and o.dtype == dtype
    assert_near_reference(o, ref, lambda: gated_delta_rule_verify(
        *upcast([q, k, v, g, beta]), K ** -0.5, *upcast([states0, cache0]), idx, nrep, True), dtype, state_dtype)
    assert (o.view(B, T1, HV, V)[idx < 0] == 0).all()
    assert_states(states, ref_states, states0, idx, 1e-5 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)
    assert_states(cache, ref_cache, cache0, idx, 1e-6)


def spec_batch(N: int, T1: int, gen: torch.Generator, accept_past_q: bool = False):
    """Token counts Q (1..T1) and num_accepted a (>= 1) of N verification sequences: the first two have Q = T1, with
    a = 1 and a = T1, the last Q = T1; the rest draw Q, and all but the first two a, at random. a <= Q unless
    accept_past_q (a <= T1 then)."""
    lens, accepted = [], []
    for n in range(N):
        Q = T1 if n < 2 or n == N - 1 else int(torch.randint(1, T1 + 1, (1,), generator=gen))
        a = (1, T1)[n] if n < 2 else int(torch.randint(1, (T1 if accept_past_q else Q) + 1, (1,), generator=gen))
        lens.append(Q)
        accepted.append(a)
    return lens, torch.tensor(accepted, dtype=torch.int32)


def check_conv_verify(op, device, N, k, D, dtype=torch.float32, state_dtype=torch.float32, bias=True, silu=True,
                      seed=0):
    """causal_conv1d_verify-like op against naive_causal_conv1d_verify. k speculative tokens: T1 = k + 1 tokens at
    most per sequence, L = W - 1 + k. Returns (output error, state error)."""
    gen = torch.Generator().manual_seed(seed)
    W, T1 = 4, k + 1
    L = W - 1 + k
    S = N + 3
    lens, accepted = spec_batch(N, T1, gen)
    T = sum(lens)
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    x_rows = torch.randn(T, D + 16, generator=gen).to(dtype)  # x is a row-strided view, as from a projection
    weight = torch.randn(D, W, generator=gen).to(dtype)
    b = torch.randn(D, generator=gen).to(dtype) if bias else None
    states0 = torch.randn(S, L, D, generator=gen).to(state_dtype)
    idx = slot_map(N, S, gen)
    for n in range(N):
        if idx[n] >= 0:
            states0[idx[n], :int(accepted[n]) - 1] = float("nan")  # rows before the window: neither read nor kept
    ref_states = states0.clone()
    ref = naive_causal_conv1d_verify(x_rows[:, 8:8 + D], weight, b, ref_states, cu, idx, accepted, silu)
    states = states0.to(device)
    out = op(x_rows.to(device)[:, 8:8 + D], weight.to(device), None if b is None else b.to(device), states,
             cu.to(device), idx.to(device), accepted.to(device), silu)
    assert out.shape == (T, D) and out.dtype == dtype and out.device.type == torch.device(device).type
    assert out.isfinite().all()
    err = rel_rms(out, ref)
    assert err < out_tol(dtype), err
    for n in range(N):
        if idx[n] < 0:
            assert (out[cu[n]:cu[n + 1]] == 0).all()
    used = [int(s) for s in idx if s >= 0]
    state_err = rel_rms(states.cpu()[used], ref_states[used])
    assert_states(states, ref_states, states0, idx, 1e-6 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)
    return err, state_err


def check_recurrent_verify(op, device, N, k, H, HV, K, V, dtype=torch.float32, state_dtype=torch.float32,
                           gates="random", use_qk_l2norm=True, seed=0):
    """recurrent_gated_delta_rule_verify-like op against naive_recurrent_gated_delta_rule_verify. k speculative
    tokens: C = T1 = k + 1 slots per sequence, Q <= T1 tokens, a <= C (past Q too: a slot only read). Sequence 1
    is padding (a row of -1); the last one has a -1 among its written columns (that write is skipped). The slots of
    a sequence other than the one it reads hold NaN. Returns (output error, state error)."""
    gen = torch.Generator().manual_seed(seed)
    T1 = C = k + 1
    S = N * C + 3
    lens, accepted = spec_batch(N, T1, gen, accept_past_q=True)
    T = sum(lens)
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    q, k_, v, _, _, _, _, g, beta = gdr_inputs(T, H, HV, K, V, dtype, gates, gen)
    if not use_qk_l2norm:
        q, k_ = F.normalize(q.float(), dim=-1).to(dtype), F.normalize(k_.float(), dim=-1).to(dtype)
    states0 = (0.1 * torch.randn(S, HV, K, V, generator=gen)).to(state_dtype)
    idx = torch.randperm(S, generator=gen)[:N * C].to(torch.int32).view(N, C)
    if N > 2:
        idx[1] = -1
    # the last sequence (Q = T1 >= 2) skips the write of a column past 0 (a -1 there skips the sequence) not read
    skip = 1 if accepted[N - 1] != 2 else (2 if T1 > 2 else None)
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

    # q, k, v as views of one [T, 2 H K + HV V] tensor, as split from the conv output
    qkv = torch.cat([q.reshape(T, -1), k_.reshape(T, -1), v.reshape(T, -1)], 1).to(device)
    qd, kd, vd = qkv.split([H * K, H * K, HV * V], 1)
    dev = lambda t: t.to(device)  # noqa: E731
    states = dev(states0)
    o = op(qd.view(T, H, K), kd.view(T, H, K), vd.view(T, HV, V), dev(g), dev(beta), scale, states, dev(cu),
           dev(idx), dev(accepted), use_qk_l2norm)
    assert o.shape == (T, HV, V) and o.dtype == dtype and o.device.type == torch.device(device).type
    assert o.isfinite().all()
    err = rel_rms(o, ref)
    # a bf16 state: the naive reference rounds it after every token, the kernel only where it writes
    tol = out_tol(dtype) if state_dtype == torch.float32 else 1e-2 * LOWP_SLACK
    assert err < tol, err
    for n in range(N):
        if idx[n, 0] < 0:
            assert (o[cu[n]:cu[n + 1]] == 0).all()
    state_err = rel_rms(states.cpu()[written.long()], ref_states[written.long()])
    assert_states(states, ref_states, states0, written, 1e-5 if state_dtype == torch.float32 else 4e-3 * LOWP_SLACK)
    return err, state_err
