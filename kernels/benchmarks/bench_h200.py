"""Checks, then times, every GDN op the model calls on CUDA against the anchors at Qwen3-Next sizes, and writes a
results table.

    python kernels/benchmarks/bench_h200.py [--anchors DIR] [--out FILE] [--only prefill,decode,verify,conv,norm]

What each row times, with the same work in the timed region for every column:
  prefill  chunk_gated_delta_rule (after the conv and the gating), initial states gathered from and final states
           written to the cache by slot. Anchors: FlashInfer's GDN prefill as vLLM calls it (the built-in's choice
           on Hopper: fp32 states gathered, alpha = exp(g), final states scattered), fla-core's
           chunk_gated_delta_rule (the built-in's Triton prefill elsewhere). Ours: our Triton kernel and our `fla`
           and `flashinfer` backends (the same libraries behind our op); `default` is the one backends.choose()
           registers on this machine.
  decode   the whole GDN step after the projections (conv update, gating, l2norm, recurrence, gated norm) in one
           op, states in place by slot. Anchor: vLLM's conv update (launched with PDL on sm_90 and newer, as vLLM
           does), its packed recurrence and a gated norm (our launch standing in for fla's), the built-in's decode.
           Ours: the default plan, each value-block plan, and the parts alone in their variants.
  verify   the speculative verification recurrence, k + 1 tokens per sequence, k + 1 states written. Anchor: vLLM's
           fused_recurrent_gated_delta_rule with ssm_state_indices and num_accepted_tokens (the built-in's).
  conv     causal_conv1d_fwd over a varlen batch, conv states read and written by slot. Anchors: vLLM's
           causal_conv1d_fn (the built-in's), causal-conv1d's CUDA forward (states gathered and scattered by
           slot; built by build_causal_conv1d.py), fla's causal_conv1d (no state I/O: less work).
  norm     gated_rms_norm over [T, HV, V].
Layouts: `kv` = states in memory [HV, K, V], `vk` = [HV, V, K] (the cache layout on CUDA, layers/state.py).
Anchors (each optional; a missing one shows as '-'): fla from `import fla` (carry fla-core's wheel), vLLM's own
Triton kernels from copies under --anchors DIR (built by make_anchors.py; never part of this repository).
Sizes: H = 16 key heads, HV = 32 value heads, K = V = 128, D = 8192 conv channels, W = 4; bf16 activations; per
rank at BENCH_TP=2 or 4 (H and HV divided, D = 2 H K + HV V).
Prefill, conv and norm: median of triton.testing.do_bench (L2 flushed before every run); decode and verify: median
replay of a CUDA graph (as vLLM runs decode steps) of 16 calls or more, rotating over disjoint state slots so
that states come from HBM (at least 256 MB a pass). Floor = the fewest bytes the op must move (each input read
once, each output and state written once) over the measured device copy rate. Every row is checked first (rel. L2
error against the CPU op on the same inputs).
BENCH_SMOKE=1 with TRITON_INTERPRET=1 runs the script's logic on CPU at toy sizes, without timing meaning.
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
from qwen3next_kernels import backends
from qwen3next_kernels.conv.triton import causal_conv1d_fwd_triton, causal_conv1d_verify_triton
from qwen3next_kernels.gated_delta_rule.library_chunk import chunk_gated_delta_rule_fla, chunk_gated_delta_rule_flashinfer
from qwen3next_kernels.gated_delta_rule.triton_chunk import chunk_gated_delta_rule_fwd_triton
from qwen3next_kernels.conv.triton import causal_conv1d_update_triton
from qwen3next_kernels.gated_delta_rule.triton_decode import gdn_decode_triton
from qwen3next_kernels.gating.triton import gdn_gating_triton
from qwen3next_kernels.gated_delta_rule.triton_fused_recurrent import fused_recurrent_gated_delta_rule_triton
from qwen3next_kernels.gated_delta_rule.triton_verify import recurrent_gated_delta_rule_verify_triton
from qwen3next_kernels.norm.triton import gated_rms_norm_triton

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
TP = int(os.environ.get("BENCH_TP", "1"))  # per-rank sizes of Qwen3-Next at this tensor-parallel size (1, 2, 4)
H, HV, K, V = (1, 2, 16, 16) if SMOKE else (16 // TP, 32 // TP, 128, 128)
D, W = 2 * H * K + HV * V, 4
SCALE = K ** -0.5
DEV = "cpu" if SMOKE else "cuda"
ops = torch.ops.qwen3next
BF16 = torch.bfloat16


def ms(fn, rep=100):
    if SMOKE:
        t = time.time()
        fn()
        return (time.time() - t) * 1e3
    return do_bench(fn, warmup=10, rep=rep, return_mode="median")


def rel(x, ref):
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def to_cpu(x):
    return {n: (t.cpu().clone() if torch.is_tensor(t) else t) for n, t in x.items()}


def copy_bandwidth():
    """Device-to-device copy rate in bytes/s, counting bytes read plus written."""
    a = torch.empty(1 << (20 if SMOKE else 30), dtype=torch.uint8, device=DEV)
    b = torch.empty_like(a)
    t = ms(lambda: b.copy_(a))
    return 2 * a.numel() / (t * 1e-3)


def states(S, dtype, vk, scale=0.1):
    """[S, HV, K, V]-shaped states; with vk a transposed view of [S, HV, V, K] memory."""
    mem = scale * torch.randn(S, HV, V, K, device=DEV) if vk else scale * torch.randn(S, HV, K, V, device=DEV)
    mem = mem.to(dtype)
    return mem.transpose(-1, -2) if vk else mem


def slots(N, S, gen, base=1):
    """N distinct slots in [base, S): slot 0 is vLLM's null block."""
    return (torch.randperm(S - base, generator=gen)[:N] + base).to(torch.int32).to(DEV)


class Anchors:
    def __init__(self, anchor_dir):
        self.fla = self.vllm_rec = self.vllm_conv = self.flashinfer = self.cc1d = self.prev_conv = None
        if SMOKE:  # the anchors' kernels do not run under the interpreter
            return
        try:
            import causal_conv1d.cpp_functions as cc1d  # built by build_causal_conv1d.py
            self.cc1d = cc1d
        except Exception as e:  # noqa: BLE001
            print(f"causal-conv1d not available: {e!r}")
        if backends.installed("flashinfer"):
            try:
                from flashinfer.gdn_prefill import chunk_gated_delta_rule as fi_chunk
                self.flashinfer = fi_chunk
            except Exception as e:  # noqa: BLE001
                print(f"FlashInfer not available: {e!r}")
        try:
            import fla.modules.causal_conv1d as fla_conv  # noqa: F401
            import fla.ops.gated_delta_rule as fla_gdr  # noqa: F401
            self.fla = (fla_gdr, fla_conv)
        except Exception as e:  # noqa: BLE001
            print(f"fla not available: {e!r}")
        if anchor_dir and os.path.isdir(anchor_dir):
            sys.path.insert(0, anchor_dir)
            try:  # our conv prefill before its rows went in groups of 4 (make_anchors.PREVIOUS)
                import conv_triton_15027ea
                self.prev_conv = conv_triton_15027ea
            except Exception as e:  # noqa: BLE001
                print(f"previous conv kernel not available: {e!r}")
            try:
                from vllm.model_executor.layers.mamba.ops import causal_conv1d as v_conv
                from vllm.third_party.flash_linear_attention.ops import fused_recurrent as v_rec
                self.vllm_rec, self.vllm_conv = v_rec, v_conv
            except Exception as e:  # noqa: BLE001
                print(f"vLLM anchors not available: {e!r}")


GRAPH_CALLS = 16


def graph_ms(calls, reps=30):
    """Per-call time of a CUDA graph that runs every call once (the way vLLM runs decode steps); the calls rotate
    over disjoint state slots so that the states come from HBM, not L2. None if capture fails."""
    return graphs_ms({"": calls}, reps)[""]


def graphs_ms(named_calls: dict, reps=30) -> dict:
    """graph_ms of each entry, the graphs replayed in turn (a replay of each per round, so that a drift of the
    clocks falls on all of them alike); the time of a graph that failed to capture is None. The calls are captured
    after the caller's loops have ended: a lambda must bind its loop variables as defaults."""
    if SMOKE:
        return {n: ms(calls[0]) for n, calls in named_calls.items()}
    # at least GRAPH_CALLS calls a graph, the list repeated, so that a replay's own launch is shared out: alone in a
    # graph the decode's norm launch took 10.1 us at B = 256 on the H200, one of 16 3.2 us
    named_calls = {n: [calls[j % len(calls)] for j in range(max(len(calls), GRAPH_CALLS))]
                   for n, calls in named_calls.items()}
    graphs = {n: capture(calls) for n, calls in named_calls.items()}
    live = {n: g for n, g in graphs.items() if g is not None}
    times = {n: [] for n in live}
    for _ in range(reps):
        for n, g in live.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            times[n].append(start.elapsed_time(end))
    return {n: (sorted(times[n])[reps // 2] / len(named_calls[n]) if n in live else None) for n in graphs}


def capture(calls):
    """A CUDA graph of the calls, each once, after a warm-up run of each (compiles, workspaces); None if capture
    fails."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in calls:
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
    return graph


def rotation(bytes_per_call):
    """Number of disjoint slot sets so that one pass over them moves at least 256 MB (4x the L2)."""
    return 1 if SMOKE else max(1, min(64, math.ceil((256 << 20) / bytes_per_call)))


class Row:
    def __init__(self, op, case, builtin, floor_bytes, default="ours default"):
        """builtin, default: the names (keys of times) of the built-in's choice and of our default path."""
        self.op, self.case, self.builtin, self.floor_bytes, self.default = op, case, builtin, floor_bytes, default
        self.times, self.checks = {}, []


def prefill_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(0)
    for N, Ls in [(1, 130), (3, 65)] if SMOKE else [(1, 8192), (16, 2048), (64, 512), (4, 32768)]:
        T, S = N * Ls, N + 8
        q, k = (torch.randn(T, H, K, device=DEV, dtype=BF16) for _ in range(2))
        v = torch.randn(T, HV, V, device=DEV, dtype=BF16)
        g = torch.nn.functional.logsigmoid(torch.randn(T, HV, device=DEV)) * 0.1
        beta = torch.rand(T, HV, device=DEV)
        cu = torch.arange(0, T + 1, Ls, dtype=torch.int32, device=DEV)
        idx = slots(N, S, gen)
        hi = torch.ones(N, dtype=torch.bool, device=DEV)
        nbytes = 2 * T * (2 * H * K + 2 * HV * V) + 8 * T * HV + 2 * N * HV * K * V * 4
        row = Row("prefill", f"{N}x{Ls}, fp32 state", FI_AS_VLLM if anc.flashinfer else "fla kernel only", nbytes,
                  default=PREFILL_DEFAULT.get(backends.choose().get("chunk_gated_delta_rule")))
        il = idx.long()
        ref_st = states(S, torch.float32, False)
        cpu_st = ref_st.cpu().clone()
        ref_o = ops.chunk_gated_delta_rule(q.cpu().float(), k.cpu().float(), v.cpu().float(), g.cpu(), beta.cpu(),
                                           SCALE, cpu_st, cu.cpu(), idx.cpu(), hi.cpu(), True) if N * Ls <= 16384 \
            else None
        impls = {
            "ours triton kv": (chunk_gated_delta_rule_fwd_triton, False),
            "ours triton vk": (chunk_gated_delta_rule_fwd_triton, True),
        }
        if anc.fla:
            impls["ours fla vk"] = (chunk_gated_delta_rule_fla, True)
            impls["ours fla kv"] = (chunk_gated_delta_rule_fla, False)
        if anc.flashinfer:
            impls["ours flashinfer vk"] = (chunk_gated_delta_rule_flashinfer, True)
        for name, (fn, vk) in impls.items():
            st = states(S, torch.float32, vk)
            st.copy_(ref_st)
            o = fn(q, k, v, g, beta, SCALE, st, cu, idx, hi, True)
            if ref_o is not None:
                row.checks.append(f"{name} o {rel(o, ref_o):.1e} h {rel(st[il], cpu_st[il.cpu()]):.1e}")
            row.times[name] = ms(lambda: fn(q, k, v, g, beta, SCALE, st, cu, idx, hi, True))
        if anc.fla:
            h0 = ref_st[il].clone()
            row.times["fla kernel only"] = ms(lambda: anc.fla[0].chunk_gated_delta_rule(
                q[None], k[None], v[None], g[None], beta[None], scale=SCALE, initial_state=h0,
                output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu.long()))
        if anc.flashinfer:
            prefill_flashinfer_anchors(anc.flashinfer, row, q, k, v, g, beta, S, il, idx, hi, cu, ref_st, ref_o, cpu_st)
        rows.append(row)
        log(f"prefill {row.case}: " + "; ".join(row.checks) + " | "
            + ", ".join(f"{n} {t * 1e3:.0f} us" for n, t in row.times.items()))


FI_AS_VLLM = "FlashInfer as vLLM calls it"
PREFILL_DEFAULT = {b: f"ours {b} vk" for b in ("triton", "fla", "flashinfer")}  # our backend -> its row


def prefill_flashinfer_anchors(fi, row, q, k, v, g, beta, S, il, idx, hi, cu, ref_st, ref_o, cpu_st):
    """The built-in's Hopper prefill, as vLLM 0.33's fi_chunk_gated_delta_rule calls it (states gathered in fp32,
    the fresh ones zeroed, alpha = exp(g), final states scattered in the cache dtype); FlashInfer's kernel alone;
    and its state-pool mode (states read and written in place by slot: less work, not what the built-in does)."""
    mem = states(S, torch.float32, True).transpose(-1, -2)  # the [S, HV, V, K] memory
    mem.copy_(ref_st.transpose(-1, -2))

    def as_vllm():
        h0 = mem[il].float()
        h0[~hi] = 0
        o, ht = fi(q, k, v, g=torch.exp(g), beta=beta, scale=SCALE, initial_state=h0, output_final_state=True,
                   cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
        mem[il] = ht.to(mem.dtype)
        return o

    o = as_vllm()
    if ref_o is not None:
        row.checks.append(f"{FI_AS_VLLM} o {rel(o, ref_o):.1e} h {rel(mem[il], cpu_st[il.cpu()].transpose(-1, -2)):.1e}")
    row.times[FI_AS_VLLM] = ms(as_vllm)
    h0, alpha = mem[il].float(), torch.exp(g)
    row.times["FlashInfer kernel only"] = ms(lambda: fi(q, k, v, g=alpha, beta=beta, scale=SCALE, initial_state=h0,
                                                        output_final_state=True, cu_seqlens=cu,
                                                        use_qk_l2norm_in_kernel=True))
    try:
        row.times["FlashInfer pool mode"] = ms(lambda: fi(q, k, v, g=alpha, beta=beta, scale=SCALE, initial_state=mem,
                                                          output_final_state=True, cu_seqlens=cu, output_state=mem,
                                                          use_qk_l2norm_in_kernel=True, state_indices=idx))
    except Exception as e:  # noqa: BLE001
        print(f"FlashInfer pool mode failed: {e!r}"[:300])


def decode_inputs(B, state_dtype, vk, gen, n_sets):
    S = n_sets * B + 8
    qkvz = torch.randn(B, D + HV * V, device=DEV, dtype=BF16)
    ba = torch.randn(B, 2 * HV, device=DEV, dtype=BF16)
    perm = (torch.randperm(S - 1, generator=gen)[:n_sets * B] + 1).to(torch.int32).to(DEV)
    x = dict(
        mixed_qkv=qkvz[:, :D], z=qkvz[:, D:].view(B, HV, V), a=ba[:, HV:], b=ba[:, :HV],
        conv_weight=(0.5 * torch.randn(D, W, device=DEV)).to(BF16), conv_bias=None,
        conv_states=torch.randn(S, W - 1, D, device=DEV).to(BF16),
        A_log=torch.log(torch.rand(HV, device=DEV) * 15 + 1), dt_bias=torch.rand(HV, device=DEV),
        norm_weight=(1 + 0.1 * torch.randn(V, device=DEV)).to(BF16), norm_eps=1e-6, scale=SCALE,
        ssm_states=states(S, state_dtype, vk), state_indices=perm[:B].contiguous(), use_qk_l2norm=True,
    )
    return x, [perm[i * B:(i + 1) * B].contiguous() for i in range(n_sets)]


def decode_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(1)
    for state_dtype in (torch.float32, BF16):
        es = torch.finfo(state_dtype).bits // 8
        for B in (1, 5) if SMOKE else (1, 32, 64, 256):
            nbytes = B * (2 * HV * K * V * es + 2 * (W - 1) * D * 2 + D * 2 + 2 * HV * V * 2 + 4 * HV)
            row = Row("decode", f"B={B}, {str(state_dtype)[6:]} state", BUILTIN_DECODE, nbytes)
            n_sets = rotation(nbytes)
            x, sets = decode_inputs(B, state_dtype, True, gen, n_sets)
            cpu = to_cpu(x)
            cpu["ssm_states"] = cpu["ssm_states"].contiguous()  # the CPU op on the same values, laid out [K, V]
            ref = ops.gdn_decode(**cpu)
            out = gdn_decode_triton(**x)
            il = x["state_indices"].long()
            row.checks.append(f"out {rel(out, ref):.1e} h {rel(x['ssm_states'][il], cpu['ssm_states'][il.cpu()]):.1e}"
                              f" conv {rel(x['conv_states'][il], cpu['conv_states'][il.cpu()]):.1e}")
            timed = {}
            for BV, nw, stream in DECODE_BLOCKS:
                name = ("default" if BV is None else f"BV={BV} w={nw}") + (" stream" if stream else "")
                if BV is not None:  # each variant checked too
                    cpu_v = to_cpu(x)
                    cpu_v["ssm_states"] = cpu_v["ssm_states"].contiguous()
                    x_v = x | {"ssm_states": x["ssm_states"].clone(), "conv_states": x["conv_states"].clone()}
                    o_v = gdn_decode_triton(**x_v, BV=BV, num_warps=nw, stream_state=stream)
                    row.checks.append(f"{name} {rel(o_v, ops.gdn_decode(**cpu_v)):.1e}")
                timed[f"ours {name}"] = [lambda i=i, BV=BV, nw=nw, stream=stream: gdn_decode_triton(
                    **(x | {"state_indices": i}), BV=BV, num_warps=nw, stream_state=stream) for i in sets]
            y0 = causal_conv1d_update_triton(x["mixed_qkv"], x["conv_weight"], None, x["conv_states"].clone(),
                                             x["state_indices"], True)
            g0, beta0 = gdn_gating_triton(x["A_log"], x["a"], x["b"], x["dt_bias"])
            timed["part: our recurrence op BV=32 w=1"] = [
                lambda i=i: fused_recurrent_gated_delta_rule_triton(
                    y0[:, :H * K].view(B, H, K), y0[:, H * K:2 * H * K].view(B, H, K), y0[:, 2 * H * K:].view(B, HV, V),
                    g0, beta0, SCALE, x["ssm_states"], i, True, BV=32, num_warps=1) for i in sets]
            for BD, nw in CONV_UPDATE_BLOCKS:
                y1 = causal_conv1d_update_triton(x["mixed_qkv"], x["conv_weight"], None, x["conv_states"].clone(),
                                                 x["state_indices"], True, BD=BD, num_warps=nw)
                row.checks.append(f"conv BD={BD} w={nw} {rel(y1, y0):.1e}")
                timed[f"part: our conv update BD={BD} w={nw}"] = [
                    lambda i=i, BD=BD, nw=nw: causal_conv1d_update_triton(
                        x["mixed_qkv"], x["conv_weight"], None, x["conv_states"], i, True, BD=BD, num_warps=nw)
                    for i in sets]
            o0 = torch.randn(B, HV, V, device=DEV, dtype=BF16)
            n0 = gated_rms_norm_triton(o0, x["z"], x["norm_weight"], 1e-6)
            for BR, nw in NORM_BLOCKS:
                name = f"BR={BR or 4096 // V} w={nw}"
                n1 = gated_rms_norm_triton(o0, x["z"], x["norm_weight"], 1e-6, BR, nw)
                row.checks.append(f"norm {name} {rel(n1, n0):.1e}")
                timed[f"part: our gated norm {name}"] = [lambda BR=BR, nw=nw: gated_rms_norm_triton(
                    o0, x["z"], x["norm_weight"], 1e-6, BR, nw) for _ in sets]
            if anc.vllm_rec:
                st_v = x["ssm_states"].transpose(-1, -2)  # the [S, HV, V, K] memory itself
                out_v = torch.empty(B, 1, HV, V, device=DEV, dtype=BF16)
                cs_v = x["conv_states"].transpose(1, 2)  # [S, D, L], unit channel stride: vLLM's view
                y_v = torch.empty_like(x["mixed_qkv"])

                def v_conv(i):
                    anc.vllm_conv.causal_conv1d_update(x["mixed_qkv"], cs_v, x["conv_weight"], None, "silu",
                                                       conv_state_indices=i, out=y_v)

                def v_rec(i):
                    anc.vllm_rec.fused_recurrent_gated_delta_rule_packed_decode(
                        y_v, x["a"], x["b"], x["A_log"], x["dt_bias"], SCALE, st_v, out_v, i, True)

                v_conv(x["state_indices"])
                row.checks.append(f"vLLM conv update vs ours {rel(y_v, y0):.1e}")
                timed["part: vLLM conv update"] = [lambda i=i: v_conv(i) for i in sets]
                timed["vLLM recurrence"] = [lambda i=i: v_rec(i) for i in sets]
                timed["vLLM conv+recurrence"] = [lambda i=i: (v_conv(i), v_rec(i)) for i in sets]
                if anc.cc1d:
                    y_c = anc.cc1d.causal_conv1d_update_function(x["mixed_qkv"].unsqueeze(-1), x["conv_states"].clone(
                        ).transpose(1, 2), x["conv_weight"], None, True, None, x["state_indices"])
                    row.checks.append(f"causal-conv1d update vs ours {rel(y_c.squeeze(-1), y0):.1e}")
                    timed["part: causal-conv1d update"] = [
                        lambda i=i: anc.cc1d.causal_conv1d_update_function(
                            x["mixed_qkv"].unsqueeze(-1), cs_v, x["conv_weight"], None, True, None, i) for i in sets]
                timed[BUILTIN_DECODE] = [lambda i=i: (v_conv(i), v_rec(i), gated_rms_norm_triton(
                    out_v.view(B, HV, V), x["z"], x["norm_weight"], 1e-6)) for i in sets]
            row.times.update(graphs_ms(timed))
            row.times = {n: t for n, t in row.times.items() if t is not None}
            rows.append(row)
            log(f"decode {row.case}: " + "; ".join(row.checks) + " | "
                + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in row.times.items()))


# The built-in's decode step is three launches: vLLM's conv update, its packed recurrence, fla's gated norm (its
# layer_norm_fwd, which needs vLLM's JIT machinery to run: our gated norm launch stands in for it).
BUILTIN_DECODE = "vLLM conv+recurrence+norm"
# (BV, num_warps, stream_state) of the decode variants (the two hints of stream_state each alone were timed at
# d6dad90: slower than neither, RESULTS_H200.md); (BD, num_warps) of the conv update's
DECODE_BLOCKS = [(None, None, None), (32, 1, False), (32, 1, True), (128, 8, False), (128, 16, False),
                 (128, 16, True)]
CONV_UPDATE_BLOCKS = [(32, 1), (64, 2), (128, 2), (128, 4), (256, 2), (256, 4), (512, 4), (1024, 8)]
NORM_BLOCKS = [(None, 4), (8, 4), (4, 2), (2, 1), (1, 1)]  # (BR, num_warps)


def verify_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(2)
    B = 4 if SMOKE else 64
    for k_spec in (2, 3):
        Q = k_spec + 1
        for state_dtype in (torch.float32, BF16):
            es = torch.finfo(state_dtype).bits // 8
            S = B * Q + 8
            T = B * Q
            q, k = (torch.randn(T, H, K, device=DEV, dtype=BF16) for _ in range(2))
            v = torch.randn(T, HV, V, device=DEV, dtype=BF16)
            g = torch.nn.functional.logsigmoid(torch.randn(T, HV, device=DEV))
            beta = torch.rand(T, HV, device=DEV)
            cu = torch.arange(0, T + 1, Q, dtype=torch.int32, device=DEV)
            idx = (1 + torch.randperm(S - 1, generator=gen)[:T]).view(B, Q).to(torch.int32).to(DEV)
            nacc = torch.randint(1, Q + 1, (B,), generator=gen, dtype=torch.int32).to(DEV)
            nbytes = B * ((1 + Q) * HV * K * V * es + Q * (2 * H * K * 2 + 2 * HV * V * 2 + 8 * HV))
            row = Row("verify", f"B={B}, k={k_spec}, {str(state_dtype)[6:]} state", "vLLM (k+1 states)", nbytes)
            st = states(S, state_dtype, True)
            cpu_st = st.cpu().contiguous().clone()
            ref = ops.recurrent_gated_delta_rule_verify(q.cpu(), k.cpu(), v.cpu(), g.cpu(), beta.cpu(), SCALE,
                                                        cpu_st, cu.cpu(), idx.cpu(), nacc.cpu(), True)
            o = recurrent_gated_delta_rule_verify_triton(q, k, v, g, beta, SCALE, st, cu, idx, nacc, True)
            il = idx.long().flatten()
            row.checks.append(f"o {rel(o, ref):.1e} h {rel(st[il], cpu_st[il.cpu()]):.1e}")
            # accepting a tokens every step (as a real run does) keeps the state bounded
            row.times["ours default"] = graph_ms([lambda: recurrent_gated_delta_rule_verify_triton(
                q, k, v, g, beta, SCALE, st, cu, idx, nacc, True)])
            for BV, nw in ((16, 1), (32, 1), (32, 2), (64, 2), (64, 4)):
                row.times[f"ours BV={BV} w={nw}"] = graph_ms([
                    lambda: recurrent_gated_delta_rule_verify_triton(q, k, v, g, beta, SCALE, st, cu, idx, nacc,
                                                                     True, BV=BV, num_warps=nw)])
            if anc.vllm_rec:
                st_v = st.transpose(-1, -2)
                row.times["vLLM (k+1 states)"] = graph_ms([lambda: anc.vllm_rec.fused_recurrent_gated_delta_rule(
                    q[None], k[None], v[None], g[None], beta[None], SCALE, st_v, True, cu_seqlens=cu,
                    ssm_state_indices=idx, num_accepted_tokens=nacc, use_qk_l2norm_in_kernel=True)])
            row.times = {n: t for n, t in row.times.items() if t is not None}
            rows.append(row)
            log(f"verify {row.case}: " + "; ".join(row.checks) + " | "
                + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in row.times.items()))


def conv_cases(anc, bw, rows, log):
    gen = torch.Generator().manual_seed(3)
    L = W - 1
    for N, Ls in [(1, 100), (3, 20)] if SMOKE else [(1, 8192), (64, 512)]:
        T, S = N * Ls, N + 8
        x = torch.randn(T, D, device=DEV, dtype=BF16)
        w = (0.5 * torch.randn(D, W, device=DEV)).to(BF16)
        cs0 = torch.randn(S, L, D, device=DEV).to(BF16)
        cu = torch.arange(0, T + 1, Ls, dtype=torch.int32, device=DEV)
        idx = slots(N, S, gen)
        hi = torch.ones(N, dtype=torch.bool, device=DEV)
        row = Row("conv", f"{N}x{Ls}, D={D}", "vLLM", 2 * T * D * 2 + N * 2 * L * D * 2)
        cs_ref = cs0.cpu().clone()
        ref = ops.causal_conv1d_fwd(x.cpu(), w.cpu(), None, cs_ref, cu.cpu(), idx.cpu(), hi.cpu(), True)
        cs = cs0.clone()
        out = causal_conv1d_fwd_triton(x, w, None, cs, cu, idx, hi, True)
        row.checks.append(f"out {rel(out, ref):.1e} state {rel(cs.cpu(), cs_ref):.1e}")
        row.times["ours default"] = ms(lambda: causal_conv1d_fwd_triton(x, w, None, cs, cu, idx, hi, True))
        for rows_k, BT, BD, nw in CONV_VARIANTS:
            kw = dict(rows=rows_k, BT=BT, BD=BD, num_warps=nw)
            if rows_k:
                cs_c = cs0.clone()
                row.checks.append(f"rows {BT}x{BD} {rel(causal_conv1d_fwd_triton(x, w, None, cs_c, cu, idx, hi, True, **kw), ref):.1e}")
            row.times[f"ours {'rows' if rows_k else 'tile'} BT={BT} BD={BD} w={nw}"] = ms(
                lambda: causal_conv1d_fwd_triton(x, w, None, cs, cu, idx, hi, True, **kw))
        if anc.prev_conv:
            prev = anc.prev_conv.causal_conv1d_fwd_triton
            cs_p = cs0.clone()
            row.checks.append(f"15027ea {rel(prev(x, w, None, cs_p, cu, idx, hi, True), ref):.1e}")
            blocks = "{} x {}, {} warps".format(*anc.prev_conv.CONV_FWD_BLOCKS["rows"])
            row.times[f"rows kernel at 15027ea ({blocks})"] = ms(lambda: prev(x, w, None, cs, cu, idx, hi, True))
        if anc.vllm_conv:
            cs_v = cs0.clone()
            row.times["vLLM"] = ms(lambda: anc.vllm_conv.causal_conv1d_fn(
                x.T, w, None, cs_v.transpose(1, 2), cu, cache_indices=idx, has_initial_state=hi, activation="silu"))
        if anc.cc1d:
            conv_causal_conv1d_anchor(anc.cc1d, row, x, w, cs0, idx, N, Ls, ref, cs_ref)
        if anc.fla:
            row.times["fla (no state I/O)"] = ms(lambda: anc.fla[1].causal_conv1d(x[None], w, None, activation="silu",
                                                                                  cu_seqlens=cu.long()))
        rows.append(row)
        log(f"conv {row.case}: " + "; ".join(row.checks) + " | "
            + ", ".join(f"{n} {t * 1e3:.1f} us" for n, t in row.times.items()))
    # the same T over more sequences (and without initial states): what the sequence count costs
    T = 128 if SMOKE else 32768
    for N, init in ((1, True), (4, False)) if SMOKE else ((1, True), (8, True), (64, False), (64, True), (256, True)):
        x = torch.randn(T, D, device=DEV, dtype=BF16)
        w = (0.5 * torch.randn(D, W, device=DEV)).to(BF16)
        cs = torch.randn(N + 8, L, D, device=DEV).to(BF16)
        cu = torch.arange(0, T + 1, T // N, dtype=torch.int32, device=DEV)
        idx, hi = slots(N, N + 8, gen), torch.full((N,), init, dtype=torch.bool, device=DEV)
        row = Row("conv (count)", f"{N}x{T // N}, {'' if init else 'no '}initial states", "-", 2 * T * D * 2)
        row.times["ours default"] = ms(lambda: causal_conv1d_fwd_triton(x, w, None, cs, cu, idx, hi, True))
        rows.append(row)
    # the verification conv, B = 64, k = 2 (3 tokens per sequence against a state of W - 1 + 2 rows)
    B, Q = (4, 3) if SMOKE else (64, 3)
    L = W - 1 + Q - 1
    S = B + 8
    x = torch.randn(B * Q, D, device=DEV, dtype=BF16)
    w = (0.5 * torch.randn(D, W, device=DEV)).to(BF16)
    cs0 = torch.randn(S, L, D, device=DEV).to(BF16)
    cu = torch.arange(0, B * Q + 1, Q, dtype=torch.int32, device=DEV)
    idx = slots(B, S, gen)
    nacc = torch.randint(1, Q + 1, (B,), generator=gen, dtype=torch.int32).to(DEV)
    row = Row("conv verify", f"B={B}, k={Q - 1}", "-", 2 * B * Q * D * 2 + 2 * B * L * D * 2, default="ours")
    cs_ref = cs0.cpu().clone()
    ref = ops.causal_conv1d_verify(x.cpu(), w.cpu(), None, cs_ref, cu.cpu(), idx.cpu(), nacc.cpu(), True)
    cs = cs0.clone()
    out = causal_conv1d_verify_triton(x, w, None, cs, cu, idx, nacc, True)
    row.checks.append(f"out {rel(out, ref):.1e} state {rel(cs.cpu(), cs_ref):.1e}")
    row.times["ours"] = graph_ms([lambda: causal_conv1d_verify_triton(x, w, None, cs0.clone(), cu, idx, nacc, True)])
    rows.append(row)
    log(f"conv verify: {row.checks[0]} | ours {row.times['ours'] * 1e3:.1f} us")


def conv_causal_conv1d_anchor(cc1d, row, x, w, cs0, idx, N, Ls, ref, cs_ref):
    """causal-conv1d's channel-last forward on the same work: N equal sequences as a [N, D, Ls] batch, initial
    states gathered by slot, final states scattered back."""
    T, D = x.shape
    cs, il = cs0.clone(), idx.long()
    xb = x.view(N, Ls, D).transpose(1, 2)  # [N, D, Ls], channel-last

    def run():
        final = torch.empty(N, W - 1, D, device=DEV, dtype=x.dtype).transpose(1, 2)
        out = cc1d.causal_conv1d_fwd_function(xb, w, None, None, cs[il].transpose(1, 2), final, True)
        cs[il] = final.transpose(1, 2)
        return out

    out = run()
    row.checks.append(f"causal-conv1d out {rel(out.transpose(1, 2).reshape(T, D), ref):.1e} "
                      f"state {rel(cs.cpu(), cs_ref):.1e}")
    row.times["causal-conv1d"] = ms(run)


# (rows kernel, BT, BD, num_warps); BT = 64 was 2.4-3.0x slower than 16 and 32 (RESULTS_H100_conv.md)
CONV_VARIANTS = [(False, 64, 128, 4)] + [(True, BT, BD, nw) for BT, BD, nw in (
    (16, 256, 2), (16, 256, 1), (32, 256, 1), (16, 512, 2), (32, 512, 2), (32, 1024, 4), (32, 512, 4), (8, 512, 2),
    (8, 256, 2))]


def norm_cases(anc, bw, rows, log):
    for T in (64,) if SMOKE else (8192,):
        x, z = (torch.randn(T, HV, V, device=DEV, dtype=BF16) for _ in range(2))
        wt = (1 + 0.1 * torch.randn(V, device=DEV)).to(BF16)
        row = Row("norm", f"T={T}", "-", 3 * T * HV * V * 2, default="ours")
        ref = ops.gated_rms_norm(x.cpu(), z.cpu(), wt.cpu(), 1e-6)
        row.checks.append(f"out {rel(gated_rms_norm_triton(x, z, wt, 1e-6), ref):.1e}")
        row.times["ours"] = ms(lambda: gated_rms_norm_triton(x, z, wt, 1e-6))
        rows.append(row)
        log(f"norm {row.case}: {row.checks[0]} | ours {row.times['ours'] * 1e3:.1f} us")


def is_ours(name):
    return name.startswith("ours")


def table(card, bw, rows):
    lines = [f"Card: {card}; device copy {bw / 1e12:.2f} TB/s (read + write); torch {torch.__version__}, "
             f"triton {triton.__version__}. Per-rank sizes at TP {TP}: H = {H}, HV = {HV}, K = {K}, V = {V}, D = {D}. "
             "Times in us (see the script's docstring for what each row times).", "",
             "| op | case | anchors | ours (each variant) | built-in's choice | default | ratio | fraction of floor "
             "| best of ours | check |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        anchors = ", ".join(f"{n} {t * 1e3:.1f}" for n, t in r.times.items() if not is_ours(n)) or "-"
        variants = ", ".join(f"{n[5:]} {t * 1e3:.1f}" for n, t in r.times.items() if is_ours(n))
        best = min(((t, n) for n, t in r.times.items() if is_ours(n)), default=None)
        if best is None:
            continue
        builtin = f"{r.builtin} {r.times[r.builtin] * 1e3:.1f}" if r.builtin in r.times else "-"
        default = r.times.get(r.default)
        ratio = f"{r.times[r.builtin] / default:.2f}x" if default and r.builtin in r.times else "-"
        floor = f"{r.floor_bytes / bw / (default * 1e-3):.0%}" if default else "-"
        lines.append(f"| {r.op} | {r.case} | {anchors} | {variants} | {builtin} | "
                     f"{r.default[5:] if default else '-'} {default * 1e3 if default else 0:.1f} | {ratio} | {floor} "
                     f"| {best[1][5:]} {best[0] * 1e3:.1f} | {'; '.join(r.checks)} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--anchors", default=os.path.join(os.path.dirname(__file__), "../../.anchors"))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS_H200.md"))
    p.add_argument("--only", default="prefill,decode,verify,conv,norm")
    args = p.parse_args()
    card = "cpu (smoke)" if SMOKE else torch.cuda.get_device_name()
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    bw = copy_bandwidth()
    log(f"{card}: copy {bw / 1e12:.2f} TB/s; registered CUDA backends: {backends.choose()}")
    anc = Anchors(args.anchors)
    rows = []
    cases = {"prefill": prefill_cases, "decode": decode_cases, "verify": verify_cases, "conv": conv_cases,
             "norm": norm_cases}
    for name in args.only.split(","):
        try:
            cases[name](anc, bw, rows, log)
        except Exception as e:  # noqa: BLE001  (report the rest; the failure is in the log)
            import traceback
            traceback.print_exc()
            log(f"{name} failed: {e!r}"[:400])
        with open(args.out, "w") as f:
            f.write("# GDN ops on the H200: ours against the anchors\n\n"
                    "Written by kernels/benchmarks/bench_h200.py.\n\n" + table(card, bw, rows))
    print(table(card, bw, rows))


if __name__ == "__main__":
    main()
