"""Our plugin against vLLM's built-in Qwen3-Next on vLLM for CPU: offline throughput and single-request latency.

    .venv/bin/python examples/bench_cpu.py [--rounds 3] [--workdir /tmp/bench_cpu]
                                           [--out examples/RESULTS_CPU.md] [--enforce-eager]
    .venv/bin/python examples/bench_cpu.py --profile examples/PROFILE_CPU_single.md --profile-workload single

Builds (once, under --workdir) a bf16 random-weight checkpoint with linear head dims 128 (the built-in CPU GDN
kernel takes only 64 or 128), then runs rounds of [ours, built-in] (the order flips every round, so slow drift in
the machine's load hits both alike), each engine in a fresh subprocess; the built-in is selected by
VLLM_PLUGINS="" (no plugin loads), ours by VLLM_PLUGINS=qwen3next. Each engine, with vLLM's defaults (torch.compile
unless --enforce-eager) and the model's default state dtypes (ours: fp32 recurrent state, built-in: bf16):
  warm-up   one 256-token request (4 new tokens) and the throughput batch at 8 new tokens;
  offline   LLM.generate of 32 prompts of 256 random tokens, 128 new tokens each, greedy, ignore_eos: output
            tokens / wall time of the call (and prompt + output tokens / wall time);
  latency   one request alone (256 prompt tokens, 128 new tokens), --latency-reps times: TTFT is the request's
            metrics.first_token_latency (front end: arrival to first token), TPOT is
            (last_token_ts - first_token_ts) / (new tokens - 1) (engine-core timestamps).
Every figure in the results is the median over rounds of each engine's median. The model classes that ran are
read back from the worker (LLM.apply_model) and checked, so a plugin that failed to load cannot pass as ours.
With --profile, instead: one engine each of ours before the C++ kernels (QWEN3NEXT_CPU_EXT=0), ours and the
built-in under vLLM's torch profiler over the chosen workload; the top ops by self CPU time go to the file.
"""
import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# 8 layers (6 GDN + 2 attention), 32 experts top-4: more layers and experts than `tiny`, small enough for 2 cores.
CHECKPOINT = dict(
    hidden_size=1024,
    num_hidden_layers=8,
    full_attention_interval=4,
    linear_num_key_heads=4,
    linear_num_value_heads=8,
    linear_key_head_dim=128,
    linear_value_head_dim=128,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=128,
    num_experts=32,
    num_experts_per_tok=4,
    moe_intermediate_size=256,
    shared_expert_intermediate_size=256,
    intermediate_size=2048,
    max_position_embeddings=4096,
)
NUM_PROMPTS, PROMPT_LEN, NEW_TOKENS = 32, 256, 128
# implementation -> environment of its engine. "ours-pytorch" (our plugin with the C++ CPU kernels off, i.e. the
# PyTorch GDN ops we had before them) is the "before" of the profile; the timed rounds compare ours and built-in.
IMPLS = {"ours": {"VLLM_PLUGINS": "qwen3next"}, "built-in": {"VLLM_PLUGINS": ""},
         "ours-pytorch": {"VLLM_PLUGINS": "qwen3next", "QWEN3NEXT_CPU_EXT": "0"}}
TIMED = ("ours", "built-in")
PROFILE_LABELS = {"ours-pytorch": "before: ours with our PyTorch GDN ops (QWEN3NEXT_CPU_EXT=0)",
                  "ours": "after: ours with the C++ CPU decode step", "built-in": "vLLM's built-in"}


def describe_model(model) -> dict:
    """Runs inside the worker: the classes of the model that serves."""
    gdn = {type(m).__module__ + "." + type(m).__qualname__ for n, m in model.named_modules()
           if n.endswith("linear_attn")}
    return {"model": type(model).__module__ + "." + type(model).__qualname__, "gdn": sorted(gdn)}


def worker(spec_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import bench_cpu

    spec = json.loads(Path(spec_path).read_text())
    rng = random.Random(0)
    prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(spec["vocab"]) for _ in range(PROMPT_LEN)])
               for _ in range(NUM_PROMPTS)]
    single = TokensPrompt(prompt_token_ids=[rng.randrange(spec["vocab"]) for _ in range(PROMPT_LEN)])

    def params(n):
        return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)

    extra = {}
    if spec["profile_dir"]:
        extra["profiler_config"] = {"profiler": "torch", "torch_profiler_dir": spec["profile_dir"],
                                    "torch_profiler_with_stack": False}
    t0 = time.perf_counter()
    llm = LLM(model=spec["model"], dtype="bfloat16", max_model_len=1024, seed=0, disable_log_stats=False,
              enforce_eager=spec["enforce_eager"], **extra)
    out = {"engine_start_s": time.perf_counter() - t0,
           "classes": llm.apply_model(bench_cpu.describe_model)[0]}
    print(f"[bench] engine up in {out['engine_start_s']:.0f}s: {out['classes']}", flush=True)

    t0 = time.perf_counter()
    llm.generate([single], params(4), use_tqdm=False)
    llm.generate(prompts, params(8), use_tqdm=False)
    out["warmup_s"] = time.perf_counter() - t0

    if spec["profile_dir"]:
        llm.start_profile()
        if spec["profile_workload"] == "offline":
            llm.generate(prompts, params(NEW_TOKENS), use_tqdm=False)
        else:
            llm.generate([single], params(NEW_TOKENS), use_tqdm=False)
        llm.stop_profile()
        Path(out_path).write_text(json.dumps(out))
        return

    cpu0, t0 = worker_cpu_s(), time.perf_counter()
    res = llm.generate(prompts, params(NEW_TOKENS), use_tqdm=False)
    wall, cpu = time.perf_counter() - t0, worker_cpu_s() - cpu0
    n_out = sum(len(r.outputs[0].token_ids) for r in res)
    assert n_out == NUM_PROMPTS * NEW_TOKENS, n_out
    out["throughput"] = {"wall_s": wall, "output_tok_s": n_out / wall,
                         "total_tok_s": (n_out + NUM_PROMPTS * PROMPT_LEN) / wall, "worker_cpu_s": cpu}
    out["first_output_ids"] = list(res[0].outputs[0].token_ids[:16])
    print(f"[bench] offline: {n_out} tokens in {wall:.1f}s = {n_out / wall:.1f} tok/s "
          f"(model worker CPU {cpu:.1f}s)", flush=True)

    lat = {"ttft_s": [], "tpot_s": [], "prefill_cpu_s": [], "decode_cpu_s": []}
    for _ in range(spec["latency_reps"]):
        cpu0 = worker_cpu_s()
        llm.generate([single], params(1), use_tqdm=False)
        cpu1 = worker_cpu_s()
        r = llm.generate([single], params(NEW_TOKENS), use_tqdm=False)[0]
        cpu2 = worker_cpu_s()
        m, n = r.metrics, len(r.outputs[0].token_ids)
        lat["ttft_s"].append(m.first_token_latency)
        lat["tpot_s"].append((m.last_token_ts - m.first_token_ts) / (n - 1))
        lat["prefill_cpu_s"].append(cpu1 - cpu0)
        lat["decode_cpu_s"].append((cpu2 - cpu1 - (cpu1 - cpu0)) / (n - 1))
    out["latency"] = lat
    print(f"[bench] latency: TTFT {1e3 * statistics.median(lat['ttft_s']):.0f} ms, "
          f"TPOT {1e3 * statistics.median(lat['tpot_s']):.1f} ms (model worker CPU per decode step "
          f"{1e3 * statistics.median(lat['decode_cpu_s']):.1f} ms)", flush=True)
    Path(out_path).write_text(json.dumps(out))


def worker_cpu_s() -> float:
    """CPU seconds used so far by this engine's model worker process (VLLM::Worker), user + system: a measure of
    the model's work that load on the machine inflates far less than wall time."""
    import psutil

    procs = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::Worker")]
    assert procs, "no VLLM::Worker process under this one"
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def build(workdir: Path) -> tuple[Path, int]:
    from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

    ckpt = workdir / "checkpoint"
    stamp = ckpt / "bench_config.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == CHECKPOINT):
        print(f"building the checkpoint in {ckpt}", flush=True)
        build_checkpoint(ckpt, "slice", dtype="bfloat16", with_mtp=False, verbose=False, **CHECKPOINT)
        stamp.write_text(json.dumps(CHECKPOINT))
    # Plain tokens only: the added tokens sit at the top of the vocabulary.
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = min(t["id"] for t in tok["added_tokens"])
    return ckpt, vocab


def run_engine(impl: str, spec: dict, workdir: Path, tag: str) -> dict:
    spec_path, out_path, log_path = (workdir / f"{tag}.{ext}" for ext in ("spec.json", "out.json", "log"))
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, **IMPLS[impl], VLLM_ALLOW_INSECURE_SERIALIZATION="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-u", str(Path(__file__).resolve()), "--worker", str(spec_path),
                                 str(out_path)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if line.startswith("[bench]"):
                print(line, end="", flush=True)
        proc.wait()
    if proc.returncode:
        raise RuntimeError(f"{tag} failed (exit {proc.returncode}); log: {log_path}\n"
                           + "".join(log_path.read_text().splitlines(True)[-40:]))
    out = json.loads(out_path.read_text())
    want = "vllm_qwen3next." if impl.startswith("ours") else "vllm.model_executor."
    assert out["classes"]["model"].startswith(want), f"{tag} ran {out['classes']}"
    log_text = log_path.read_text()
    binding = re.search(r"local_rank=0, core ids=(\[[^\]]*\])", log_text)
    out["omp_cores"] = binding.group(1) if binding else "?"
    out["total_s"] = time.perf_counter() - t0
    return out


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", info).group(1)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
    want = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"]
    import torch

    return {"cpu": model, "cores": os.cpu_count(), "flags": {f: f in flags for f in want},
            "torch": torch.__version__, "python": platform.python_version()}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(xs):
    return statistics.median(xs)


def write_results(path: Path, runs: dict, mach: dict, loads: list, args, command: str) -> None:
    def per_round(impl, f):
        return [f(r) for r in runs[impl]]

    rows = [
        ("offline throughput, output tok/s (higher is better)", lambda r: r["throughput"]["output_tok_s"], True),
        ("offline throughput, prompt + output tok/s", lambda r: r["throughput"]["total_tok_s"], True),
        ("TTFT, ms (256-token prompt, alone)", lambda r: 1e3 * median(r["latency"]["ttft_s"]), False),
        ("TPOT, ms (alone)", lambda r: 1e3 * median(r["latency"]["tpot_s"]), False),
        ("model-worker CPU time of the offline run, s", lambda r: r["throughput"]["worker_cpu_s"], False),
        ("model-worker CPU time of the 256-token prefill, ms (alone)",
         lambda r: 1e3 * median(r["latency"]["prefill_cpu_s"]), False),
        ("model-worker CPU time per decode step, ms (alone)",
         lambda r: 1e3 * median(r["latency"]["decode_cpu_s"]), False),
        ("engine start, s", lambda r: r["engine_start_s"], False),
    ]
    lines = [
        "# Our plugin vs vLLM's built-in Qwen3-Next on vLLM for CPU",
        "",
        "Reproduce (from the repository root; about "
        f"{sum(r['total_s'] for rs in runs.values() for r in rs) / 60:.0f} minutes here):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- Machine: {mach['cores']} cores, {mach['cpu']}; flags: "
        + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in mach["flags"].items())
        + f". torch {mach['torch']}, Python {mach['python']}, vLLM for CPU 0.32.0.",
        f"- Load: the machine was shared with other jobs; 1/5/15-minute load averages before each engine: "
        + "; ".join(loads) + ".",
        f"- vLLM's OpenMP binding gave the model worker cores {runs['ours'][0]['omp_cores']} "
        "(`VLLM_CPU_OMP_THREADS_BIND=auto` keeps a core for the engine-core process).",
        f"- Mode: {'eager (enforce_eager=True)' if args.enforce_eager else 'vLLM default: torch.compile of the model (its CPU default), no CUDA graphs'}"
        "; recurrent GDN state: ours fp32 (our default), built-in bf16 (its default); conv state bf16 in both.",
        "- GDN kernels that ran: ours, the C++ decode step of `kernels/csrc/gdn_decode_cpu.cpp` (conv update, "
        "gating, l2norm, recurrence and gated norm in one call, states updated in place; built on first use) and "
        "the PyTorch chunked prefill and conv of `kernels/`; the built-in, vLLM's C++ recurrence and chunked "
        "prefill and "
        + ("its C++ conv" if mach["flags"]["avx512_bf16"] else "its PyTorch conv (its C++ conv needs avx512_bf16)")
        + ". Everything else (linear layers, MoE, attention) is the same vLLM code in both.",
        f"- Checkpoint: random bf16 weights, {json.dumps(CHECKPOINT)}.",
        f"- Workload: offline, {NUM_PROMPTS} prompts of {PROMPT_LEN} random tokens, {NEW_TOKENS} new tokens each, "
        f"greedy, ignore_eos, one `LLM.generate` call. Latency: one request alone ({PROMPT_LEN} prompt tokens, "
        f"{NEW_TOKENS} new), {args.latency_reps} times per engine; TTFT = `metrics.first_token_latency`, TPOT = "
        "(last_token_ts - first_token_ts) / (new tokens - 1).",
        f"- {args.rounds} rounds of [ours, built-in], order flipped every round, each engine in a fresh process; "
        "figures are medians over rounds (per-round values in brackets).",
        "",
        "| metric | ours | built-in | ours / built-in (>= 1: ours is as fast or faster) |",
        "|---|---|---|---|",
    ]
    for name, f, higher in rows:
        o, b = per_round("ours", f), per_round("built-in", f)
        mo, mb = median(o), median(b)
        ratio = mo / mb if higher else mb / mo
        fmt = (lambda x: f"{x:.1f}") if max(mo, mb) < 100 else (lambda x: f"{x:.0f}")
        lines.append(f"| {name} | {fmt(mo)} [{', '.join(fmt(x) for x in o)}] | "
                     f"{fmt(mb)} [{', '.join(fmt(x) for x in b)}] | {ratio:.2f} |")
    lines += ["", "For times the ratio is built-in / ours, so >= 1 still means ours is at least as fast. The "
              "model-worker CPU times (user + system of the `VLLM::Worker` process, read with psutil; per decode "
              "step: a 128-token request minus a 1-token one, over 127) count the model's own work; the machine's "
              "load inflates them far less than wall time, so they are the steadier comparison here.", ""]
    path.write_text("\n".join(lines) + "\n")


def profile(args, spec: dict, mach: dict, command: str, top: int = 25) -> None:
    workload = {"offline": f"the offline run ({NUM_PROMPTS} x {PROMPT_LEN} prompt tokens, {NEW_TOKENS} new each)",
                "single": f"one request alone ({PROMPT_LEN} prompt tokens, {NEW_TOKENS} new)"}[args.profile_workload]
    sections = []
    for impl in [args.only] if args.only else ["ours-pytorch", "ours", "built-in"]:
        tag = f"profile-{args.profile_workload}-{impl.replace('-', '')}"
        pdir = args.workdir / tag
        for f in pdir.glob("*"):
            f.unlink()
        print(f"profiling {impl} (load {load()})", flush=True)
        before = load()
        run_engine(impl, spec | {"profile_dir": str(pdir), "profile_workload": args.profile_workload},
                   args.workdir, tag)
        table = next(pdir.glob("*profiler_out.txt")).read_text().splitlines()
        # the header rows and the top entries (vLLM sorts the table by self CPU time on CPU) and the total
        rows = [ln for ln in table if ln.strip()]
        sections += [f"## {PROFILE_LABELS[impl]} (load before / after: {before} / {load()})", "", "```", *rows[:3 + top], rows[-1],
                     "```", ""]
    header = [f"# torch profiler: {workload}", "",
              f"`{command}`; {mach['cores']} cores, {mach['cpu']}; "
              f"{'eager' if args.enforce_eager else 'torch.compile (vLLM default)'}.", ""]
    args.profile.write_text("\n".join(header + sections) + "\n")
    print(args.profile.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_cpu"))
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS_CPU.md")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--only", choices=sorted(IMPLS), help="run one implementation")
    ap.add_argument("--profile", type=Path, metavar="FILE",
                    help="instead of timing: one engine per implementation under vLLM's torch profiler; write the "
                         "top ops by self CPU time to FILE")
    ap.add_argument("--profile-workload", choices=["offline", "single"], default="offline",
                    help="what the profile covers: the offline run or one request alone")
    args = ap.parse_args()
    command = ".venv/bin/python examples/bench_cpu.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("/tmp"))

    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt, vocab = build(args.workdir)
    mach = machine()
    print(f"{mach['cores']} cores, {mach['cpu']}, flags {mach['flags']}", flush=True)
    spec = {"model": str(ckpt), "vocab": vocab, "enforce_eager": args.enforce_eager,
            "latency_reps": args.latency_reps, "profile_dir": None, "profile_workload": None}
    if args.profile:
        profile(args, spec, mach, command)
        return
    runs, loads = {k: [] for k in TIMED}, []
    for r in range(args.rounds):
        order = list(TIMED) if r % 2 == 0 else list(TIMED)[::-1]
        for impl in order:
            if args.only and impl != args.only:
                continue
            loads.append(f"{impl} r{r}: {load()}")
            print(f"round {r + 1}/{args.rounds}: {impl} (load {load()})", flush=True)
            runs[impl].append(run_engine(impl, spec, args.workdir, f"r{r}-{impl.replace('-', '')}"))
    if args.only:
        return
    write_results(args.out, runs, mach, loads, args, command)
    print(args.out.read_text())


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
