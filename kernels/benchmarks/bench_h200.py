"""Checks, then times, our Triton GDN kernels against the anchors at Qwen3-Next sizes, and writes a results table.

    python kernels/benchmarks/bench_h200.py [--anchors DIR] [--out FILE] [--only prefill,decode,verify,conv]

Anchors (each optional; a missing one shows as '-'):
  fla      flash-linear-attention (fla-core 0.6): chunk_gated_delta_rule, fused_recurrent_gated_delta_rule,
           causal_conv1d; timed with the same work as ours (gating and l2norm in kernel, states gathered from and
           scattered to the cache by slot) unless the row says otherwise.
  vllm     vLLM 0.32's own Triton kernels for this model (its packed recurrent decode, its spec-decode recurrence,
           its causal conv1d prefill and update), imported from copies of its files under --anchors DIR (package
           'vllm', with a shim for the few helpers they use; never part of this repository).
Sizes: H = 16 key heads, HV = 32 value heads, K = V = 128, D = 8192 conv channels, W = 4; bf16 activations.
Prefill and conv prefill times are medians of triton.testing.do_bench (L2 flushed before every run); decode and
verification times are medians of CUDA graph replays (as vLLM runs decode), each replay rotating over disjoint
state slots so that states come from HBM. The floor is the fewest bytes the
step must move (each input read once, each output and state written once) over the measured device copy rate.
"""
import argparse
import math
import os
import sys
import time

import torch
import triton
from triton.testing import do_bench

import qwen3next_kernels  # noqa: F401  (registers the ops)
import qwen3next_kernels.cuda  # noqa: F401
from qwen3next_kernels.gated_delta_rule.fused_ops import spec_cache_width
from qwen3next_kernels.gated_delta_rule.triton_chunk import chunk_gdr_fwd_triton

# BENCH_SMOKE=1 (with TRITON_INTERPRET=1) runs the script's logic on CPU at toy sizes, without timing meaning.
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
H, HV, K, V = (1, 2, 16, 16) if SMOKE else (16, 32, 128, 128)
D, W, L = 2 * H * K + HV * V, 4, 3
SCALE = K ** -0.5
DEV = "cpu" if SMOKE else "cuda"
ops = torch.ops.qwen3next


def ms(fn, rep=200):
    if SMOKE:
        t = time.time()
        fn()
        return (time.time() - t) * 1e3
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def rel(x, ref):
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def copy_bandwidth():
    """Device-to-device copy rate in bytes/s, counting bytes read plus written."""
    a = torch.empty(1 << (20 if SMOKE else 30), dtype=torch.uint8, device=DEV)
    b = torch.empty_like(a)
    t = ms(lambda: b.copy_(a), rep=100)
    return 2 * a.numel() / (t * 1e-3)


class Anchors:
    def __init__(self, anchor_dir):
        self.fla = self.vllm = None
        try:
            import fla.modules.causal_conv1d as fla_conv
            import fla.ops.gated_delta_rule as fla_gdr
            self.fla = (fla_gdr, fla_conv)
        except Exception as e:  # noqa: BLE001
            print(f"fla not available: {e!r}")
        if anchor_dir and os.path.isdir(anchor_dir):
            sys.path.insert(0, anchor_dir)
            try:
                from vllm.model_executor.layers.mamba.ops import causal_conv1d as v_conv
                from vllm.third_party.flash_linear_attention.ops import fused_recurrent as v_rec
                self.vllm = (v_rec, v_conv)
            except Exception as e:  # noqa: BLE001
                print(f"vLLM anchors not available: {e!r}")


def slots(N, S, gen, base=0):
    return (torch.randperm(S - base, generator=gen)[:N] + base).to(torch.int32)


def intra_only(q, k, v, a, b, A_log, dt_bias, cu, N):
    """The first (chunk-parallel) kernel of our prefill on its own, for the time split."""
    from qwen3next_kernels.conv.triton_conv import seq_block
    from qwen3next_kernels.gated_delta_rule import triton_chunk as tc
    T = q.shape[0]
    w = torch.empty(T, HV, K, dtype=k.dtype, device=DEV)
    u = torch.empty(T, HV, V, dtype=k.dtype, device=DEV)
    Aqk = torch.empty(T, HV, 64, dtype=k.dtype, device=DEV)
    dot_dt, prec = tc.dot_config(k.dtype, recurrent=False)
    tc.chunk_gdr_fwd_intra_kernel[(triton.cdiv(T, 64) + N, H)](
        q, k, v, a, b, A_log, dt_bias, w, u, Aqk, cu, SCALE, N, q.stride(0), k.stride(0), v.stride(0),
        a.stride(0), b.stride(0), H=H, HV=HV, K=K, V=V, BK=K, BVF=V, BT=64, BN=seq_block(N),
        USE_L2NORM=True, FUSE_GATING=True, DOT_DTYPE=dot_dt, DOT_PRECISION=prec, num_warps=4)


def prefill_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(0)
    for N, Ls in [(1, 130), (3, 65)] if SMOKE else [(1, 8192), (16, 2048), (64, 512), (4, 32768)]:
        T = N * Ls
        S = N + 8
        q = torch.randn(T, H, K, device=DEV, dtype=torch.bfloat16)
        k = torch.randn(T, H, K, device=DEV, dtype=torch.bfloat16)
        v = torch.randn(T, HV, V, device=DEV, dtype=torch.bfloat16)
        a = torch.randn(T, HV, device=DEV, dtype=torch.bfloat16)
        b = torch.randn(T, HV, device=DEV, dtype=torch.bfloat16)
        A_log = torch.log(torch.rand(HV, device=DEV) * 15 + 1)
        dt_bias = torch.rand(HV, device=DEV)
        states0 = 0.1 * torch.randn(S, HV, K, V, device=DEV)
        cu = torch.arange(0, T + 1, Ls, dtype=torch.int32, device=DEV)
        idx = slots(N, S, gen).to(DEV)
        hi = torch.ones(N, dtype=torch.bool, device=DEV)
        args = (cu, idx, hi, True)
        # correctness: bf16 runs against our fp32-input run (tf32x3 dots, checked against the naive reference
        # by the tests); fla's bf16 error against the same reference is the yardstick
        st_ref = states0.clone()
        o_ref = ops.fused_gdn_prefill(q.float(), k.float(), v.float(), a.float(), b.float(), A_log, dt_bias, SCALE,
                                      st_ref, *args)
        st = states0.clone()
        o = ops.fused_gdn_prefill(q, k, v, a, b, A_log, dt_bias, SCALE, st, *args)
        err = f"ours o {rel(o, o_ref):.2e} state {rel(st[idx.long()], st_ref[idx.long()]):.2e}"
        times = {}
        st = states0.clone()
        times["ours"] = ms(lambda: ops.fused_gdn_prefill(q, k, v, a, b, A_log, dt_bias, SCALE, st, *args))
        sweep = {}
        for BV, nw in ((16, 4), (32, 4), (32, 8)):
            st = states0.clone()
            sweep[(BV, nw)] = ms(lambda: chunk_gdr_fwd_triton(q, k, v, a, b, SCALE, st, cu, idx, hi, True,
                                                              A_log=A_log, dt_bias=dt_bias, BV=BV, num_warps=nw))
        t_intra = ms(lambda: intra_only(q, k, v, a, b, A_log, dt_bias, cu, N))
        log(f"prefill {N}x{Ls}: chunk-local kernel alone {t_intra * 1e3:.0f} us; (BV, warps) sweep "
            + ", ".join(f"{c}: {t * 1e3:.0f} us" for c, t in sweep.items()))
        if anc.fla:
            fla_gdr = anc.fla[0]
            cu64, cu_cpu = cu.long(), cu.long().cpu()
            st = states0.clone()
            il = idx.long()

            def fla_same_work():
                o_f, ht = fla_gdr.chunk_gated_delta_rule(
                    q[None], k[None], v[None], a[None], b[None], scale=SCALE, initial_state=st[il],
                    output_final_state=True, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=A_log,
                    dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True, cu_seqlens=cu64, cu_seqlens_cpu=cu_cpu)
                st[il] = ht
                return o_f

            o_f = fla_same_work()
            st = states0.clone()
            o_f = fla_same_work()
            err += f"; fla o {rel(o_f[0], o_ref):.2e} state {rel(st[il], st_ref[il]):.2e}"
            times["fla"] = ms(fla_same_work)
            g_, beta_ = ops.gdn_gating(A_log, a, b, dt_bias)
            h0 = states0[il].clone()
            times["fla kernel only"] = ms(lambda: fla_gdr.chunk_gated_delta_rule(
                q[None], k[None], v[None], g_[None], beta_[None], scale=SCALE, initial_state=h0,
                output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu64, cu_seqlens_cpu=cu_cpu))
        # about 2 T K (3 HV + H) dot flops per token... the floor here is the bytes: q, k, v, a, b read, o and
        # the states written once
        nbytes = 2 * T * (2 * H * K + 2 * HV * V + 2 * HV) + 2 * N * HV * K * V * 4
        rows.append(("prefill", f"{N}x{Ls}, fp32 state", times, "fla", nbytes / bw, err))
        log(f"prefill {N}x{Ls}: {err}; " + ", ".join(f"{n} {t * 1e3:.0f} us" for n, t in times.items()))


def graph_ms(calls, reps=30):
    """Per-call time of a CUDA graph that runs every call once (the way vLLM runs decode steps); the calls
    rotate over disjoint state slots so that the states come from HBM, not L2. None if capture fails."""
    if SMOKE:
        return ms(calls[0])
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in calls:  # compile, allocate workspaces
            c()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for c in calls:
                c()
    except Exception as e:  # noqa: BLE001
        print(f"graph capture failed: {e!r}"[:300])
        return None
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2] / len(calls)


def rotation(bytes_per_call):
    """Number of disjoint slot sets so that one pass over them moves at least 256 MB (4x the L2)."""
    return max(1, min(128, math.ceil((256 << 20) / bytes_per_call)))


def decode_inputs(B, state_dtype, gen, n_sets):
    S = n_sets * B + 8
    qkvz = torch.randn(B, D + HV * V, device=DEV, dtype=torch.bfloat16)
    ba = torch.randn(B, 2 * HV, device=DEV, dtype=torch.bfloat16)
    perm = (torch.randperm(S - 1, generator=gen)[:n_sets * B] + 1).to(torch.int32).to(DEV)  # slot 0: vLLM's null
    x = dict(
        mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), b=ba[:, :HV], a=ba[:, HV:],
        conv_weight=(0.5 * torch.randn(D, W, device=DEV)).to(torch.bfloat16),
        conv_states=torch.randn(S, L, D, device=DEV).to(torch.bfloat16),
        A_log=torch.log(torch.rand(HV, device=DEV) * 15 + 1), dt_bias=torch.rand(HV, device=DEV),
        norm_weight=(1 + 0.1 * torch.randn(V, device=DEV)).to(torch.bfloat16),
        ssm_states=(0.1 * torch.randn(S, HV, K, V, device=DEV)).to(state_dtype),
        state_indices=perm[:B].contiguous(),
    )
    return x, [perm[i * B:(i + 1) * B].contiguous() for i in range(n_sets)]


def fused_decode(x, idx=None, **kw):
    if kw:
        from qwen3next_kernels.gated_delta_rule.triton_fused import fused_gdn_decode_triton
        return fused_gdn_decode_triton(x["mixed_qkv"], x["z"], x["a"], x["b"], x["conv_weight"], None,
                                       x["conv_states"], x["A_log"], x["dt_bias"], x["norm_weight"], 1e-6, SCALE,
                                       x["ssm_states"], x["state_indices"] if idx is None else idx, True, **kw)
    return ops.fused_gdn_decode(x["mixed_qkv"], x["z"], x["a"], x["b"], x["conv_weight"], None, x["conv_states"],
                                x["A_log"], x["dt_bias"], x["norm_weight"], 1e-6, SCALE, x["ssm_states"],
                                x["state_indices"] if idx is None else idx, True)


def decode_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(1)
    for state_dtype in (torch.float32, torch.bfloat16):
        es = torch.finfo(state_dtype).bits // 8
        for B in (1, 5) if SMOKE else (1, 64, 256):
            nbytes = B * (2 * HV * K * V * es + 2 * L * D * 2 + D * 2 + 2 * HV * V * 2 + 4 * HV)
            x, sets = decode_inputs(B, state_dtype, gen, rotation(nbytes))
            cpu = {n: (t.cpu().clone() if torch.is_tensor(t) else t) for n, t in x.items()}
            ref = fused_decode(cpu)
            out = fused_decode(x)
            il = x["state_indices"].long()
            err = (f"ours out {rel(out, ref):.2e} state {rel(x['ssm_states'][il], cpu['ssm_states'][il.cpu()]):.2e}"
                   f" conv {rel(x['conv_states'][il], cpu['conv_states'][il.cpu()]):.2e}")
            times = {"ours": graph_ms([lambda i=i: fused_decode(x, i) for i in sets])}
            sweep = {}
            for BV, nw in ((128, 4), (128, 8), (64, 4), (32, 1), (16, 1)):
                sweep[(BV, nw)] = graph_ms([lambda i=i: fused_decode(x, i, BV=BV, num_warps=nw) for i in sets])
            log(f"decode B={B} {state_dtype}: (BV, warps) sweep " + ", ".join(
                f"{c}: {t * 1e3:.1f} us" for c, t in sweep.items() if t is not None))

            def unfused(idx):
                y = ops.causal_conv1d_update(x["mixed_qkv"], x["conv_weight"], None, x["conv_states"], idx, True)
                g, beta = ops.gdn_gating(x["A_log"], x["a"], x["b"], x["dt_bias"])
                q_, k_, v_ = y[:, :H * K].view(B, H, K), y[:, H * K:2 * H * K].view(B, H, K), y[:, 2 * H * K:]
                o = ops.fused_recurrent_gated_delta_rule(q_, k_, v_.view(B, HV, V), g, beta, SCALE, x["ssm_states"],
                                                         idx, True)
                return ops.gated_rms_norm(o, x["z"], x["norm_weight"], 1e-6)

            times["ours, 4 ops"] = graph_ms([lambda i=i: unfused(i) for i in sets])
            y = ops.causal_conv1d_update(x["mixed_qkv"], x["conv_weight"], None, x["conv_states"].clone(),
                                         x["state_indices"], True)  # post-conv activations for the anchors
            if anc.vllm:
                v_rec, v_conv = anc.vllm
                st_v = x["ssm_states"].transpose(-1, -2).contiguous()  # vLLM's [S, HV, V, K]
                out_v = torch.empty(B, 1, HV, V, device=DEV, dtype=torch.bfloat16)
                times["vLLM recurrence"] = graph_ms([lambda i=i: v_rec.fused_recurrent_gated_delta_rule_packed_decode(
                    y, x["a"], x["b"], x["A_log"], x["dt_bias"], SCALE, st_v, out_v, i, True) for i in sets])
                cs_v = x["conv_states"].transpose(1, 2)  # [S, D, L] with unit channel stride, vLLM's view
                y_v = torch.empty_like(x["mixed_qkv"])
                times["vLLM conv update"] = graph_ms([lambda i=i: v_conv.causal_conv1d_update(
                    x["mixed_qkv"], cs_v, x["conv_weight"], None, "silu", conv_state_indices=i, out=y_v)
                    for i in sets])
                if times["vLLM recurrence"] and times["vLLM conv update"]:
                    times["vLLM conv+recurrence"] = times["vLLM recurrence"] + times["vLLM conv update"]
            if anc.fla:
                fla_gdr = anc.fla[0]
                q_, k_, v_ = (y[:, :H * K].reshape(B, 1, H, K), y[:, H * K:2 * H * K].reshape(B, 1, H, K),
                              y[:, 2 * H * K:].reshape(B, 1, HV, V))
                st = x["ssm_states"]

                def fla_decode(idx):
                    il_ = idx.long()
                    o_f, ht = fla_gdr.fused_recurrent_gated_delta_rule(
                        q_, k_, v_, g=x["a"][:, None], beta=x["b"][:, None], scale=SCALE, initial_state=st[il_],
                        output_final_state=True, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
                        A_log=x["A_log"], dt_bias=x["dt_bias"], use_beta_sigmoid_in_kernel=True)
                    st[il_] = ht.to(st.dtype)
                    return o_f

                times["fla recurrence"] = graph_ms([lambda i=i: fla_decode(i) for i in sets])
            times = {n: t for n, t in times.items() if t is not None}
            rows.append(("decode", f"B={B}, {str(state_dtype)[6:]} state", times, "vLLM recurrence", nbytes / bw,
                         err))
            log(f"decode B={B} {state_dtype}: {err}; " + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in times.items()))


def verify_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(2)
    B, T1 = (4, 3) if SMOKE else (64, 3)
    for state_dtype in (torch.float32, torch.bfloat16):
        es = torch.finfo(state_dtype).bits // 8
        S = B * T1 + 8
        q = torch.randn(B * T1, H, K, device=DEV, dtype=torch.bfloat16)
        k = torch.randn(B * T1, H, K, device=DEV, dtype=torch.bfloat16)
        v = torch.randn(B * T1, HV, V, device=DEV, dtype=torch.bfloat16)
        g = torch.nn.functional.logsigmoid(torch.randn(B * T1, HV, device=DEV))
        beta = torch.rand(B * T1, HV, device=DEV)
        states = (0.1 * torch.randn(S, HV, K, V, device=DEV)).to(state_dtype)
        cache = torch.randn(S, T1, spec_cache_width(H, HV, K, V), device=DEV)
        cache[..., H * K + HV * V:] = torch.rand(S, T1, 2 * HV, device=DEV)
        cache[..., H * K + HV * V:H * K + HV * V + HV] *= -1
        idx = slots(B, S, gen, base=1).to(DEV)
        nrep = torch.randint(1, T1 + 1, (B,), generator=gen, dtype=torch.int32).to(DEV)
        cpu = [t.cpu().clone() for t in (q, k, v, g, beta, states, cache, idx, nrep)]
        ref = ops.gated_delta_rule_verify(*cpu[:5], SCALE, *cpu[5:], True)
        st, ca = states.clone(), cache.clone()
        o = ops.gated_delta_rule_verify(q, k, v, g, beta, SCALE, st, ca, idx, nrep, True)
        il = idx.long()
        err = (f"ours o {rel(o, ref):.2e} state {rel(st[il], cpu[5][il.cpu()]):.2e}"
               f" records {rel(ca[il], cpu[6][il.cpu()]):.2e}")
        # replaying nrep tokens every step, as a real run does, keeps the state bounded
        times = {"ours": graph_ms([lambda: ops.gated_delta_rule_verify(q, k, v, g, beta, SCALE, st, ca, idx, nrep,
                                                                       True)])}
        if anc.vllm:
            v_rec = anc.vllm[0]
            st_v = (0.1 * torch.randn(B * T1 + 1, HV, V, K, device=DEV)).to(state_dtype)
            idx_v = (1 + torch.randperm(B * T1, generator=gen)).view(B, T1).to(torch.int32).to(DEV)
            cu = torch.arange(0, B * T1 + 1, T1, dtype=torch.int32, device=DEV)
            times["vLLM (writes k+1 states)"] = graph_ms([lambda: v_rec.fused_recurrent_gated_delta_rule(
                q[None], k[None], v[None], g[None], beta[None], SCALE, st_v, True, cu_seqlens=cu,
                ssm_state_indices=idx_v, num_accepted_tokens=nrep, use_qk_l2norm_in_kernel=True)])
        times = {n: t for n, t in times.items() if t is not None}
        nbytes = B * (2 * HV * K * V * es + T1 * (2 * H * K * 2 + 2 * HV * V * 2 + 8 * HV)
                      + 2 * T1 * spec_cache_width(H, HV, K, V) * 4)
        rows.append(("verify", f"B={B}, k={T1 - 1}, {str(state_dtype)[6:]} state", times,
                     "vLLM (writes k+1 states)", nbytes / bw, err))
        log(f"verify {state_dtype}: {err}; " + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in times.items()))


def conv_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(3)
    for N, Ls in [(1, 100), (3, 20)] if SMOKE else [(1, 8192), (64, 512)]:
        T, S = N * Ls, N + 8
        x = torch.randn(T, D, device=DEV, dtype=torch.bfloat16)
        w = (0.5 * torch.randn(D, W, device=DEV)).to(torch.bfloat16)
        cs0 = torch.randn(S, L, D, device=DEV).to(torch.bfloat16)
        cu = torch.arange(0, T + 1, Ls, dtype=torch.int32, device=DEV)
        idx = slots(N, S, gen, base=1).to(DEV)
        hi = torch.ones(N, dtype=torch.bool, device=DEV)
        cs_ref = cs0.cpu().clone()
        ref = ops.causal_conv1d_fwd(x.cpu(), w.cpu(), None, cs_ref, cu.cpu(), idx.cpu(), hi.cpu(), True)
        cs = cs0.clone()
        out = ops.causal_conv1d_fwd(x, w, None, cs, cu, idx, hi, True)
        err = f"ours out {rel(out.cpu(), ref):.2e} state {rel(cs.cpu(), cs_ref):.2e}"
        times = {"ours": ms(lambda: ops.causal_conv1d_fwd(x, w, None, cs, cu, idx, hi, True))}
        if anc.vllm:
            v_conv = anc.vllm[1]
            cs_v = cs0.clone()
            times["vLLM"] = ms(lambda: v_conv.causal_conv1d_fn(x.T, w, None, cs_v.transpose(1, 2), cu,
                                                               cache_indices=idx, has_initial_state=hi,
                                                               activation="silu"))
        if anc.fla:
            fla_conv = anc.fla[1]
            cu64 = cu.long()
            times["fla (no state I/O)"] = ms(lambda: fla_conv.causal_conv1d(x[None], w, None, activation="silu",
                                                                            cu_seqlens=cu64))
        nbytes = 2 * T * D * 2 + N * 2 * L * D * 2
        rows.append(("conv", f"{N}x{Ls}, D={D}", times, "vLLM", nbytes / bw, err))
        log(f"conv {N}x{Ls}: {err}; " + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in times.items()))


def table(card, bw, rows):
    names = []
    for _, _, times, _, _, _ in rows:
        names += [n for n in times if n != "ours" and n not in names]
    lines = [f"Card: {card}; device copy {bw / 1e12:.2f} TB/s (read + write). torch {torch.__version__}, "
             f"triton {triton.__version__}. Times in us: prefill and conv, median of triton.testing.do_bench; "
             "decode and verify, median CUDA graph replay (see the script).", "",
             "| op | case | " + " | ".join(names) + " | ours | ratio (anchor / ours) | fraction of floor | check |",
             "|---|---|" + "---|" * len(names) + "---|---|---|---|"]
    for op, case, times, main, floor, err in rows:
        cells = [f"{times[n] * 1e3:.1f}" if n in times else "-" for n in names]
        ratio = f"{times[main] / times['ours']:.2f}x vs {main}" if main in times else "-"
        lines.append(f"| {op} | {case} | " + " | ".join(cells) + f" | {times['ours'] * 1e3:.1f} | {ratio} | "
                     f"{floor / (times['ours'] * 1e-3):.0%} | {err} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--anchors", default=os.path.join(os.path.dirname(__file__), "../../.anchors"))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS_H200.md"))
    p.add_argument("--only", default="prefill,decode,verify,conv")
    args = p.parse_args()
    card = "cpu (smoke)" if SMOKE else torch.cuda.get_device_name()
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    bw = copy_bandwidth()
    log(f"{card}: copy {bw / 1e12:.2f} TB/s")
    anc = Anchors(args.anchors)
    rows = []
    for name in args.only.split(","):
        try:
            {"prefill": prefill_cases, "decode": decode_cases, "verify": verify_cases, "conv": conv_cases}[name](
                anc, bw, rows, log)
        except Exception as e:  # noqa: BLE001  (report the rest; the failure is in the log)
            import traceback
            traceback.print_exc()
            log(f"{name} failed: {e!r}"[:400])
        with open(args.out, "w") as f:
            f.write("# GDN kernels on the H200: ours against the anchors\n\n"
                    "Written by kernels/benchmarks/bench_h200.py (see its docstring for what each column times).\n\n"
                    + table(card, bw, rows))
    print(table(card, bw, rows))


if __name__ == "__main__":
    main()
