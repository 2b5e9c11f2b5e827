"""Worker memory (RSS) of vLLM for CPU over many distinct prompt lengths: float32 vs bfloat16, and with
oneDNN's primitive cache at other capacities.

    python examples/bench_memory.py CHECKPOINT [--lengths 200] [--dtypes float32 bfloat16] [--caches 1024 64]

Each configuration runs in a fresh process (the cache capacity is read once per process, from
ONEDNN_PRIMITIVE_CACHE_CAPACITY). It sends one prompt per length (1 output token, so the step is a
prefill of M = length tokens), reading the model worker's RSS every 25 lengths, then sends the same
lengths again. vLLM's CPU linear layers run oneDNN matmuls (`onednn_mm`) whose primitives are built
per M: vLLM keeps up to 32 M sizes per weight shape, and oneDNN's own cache (1024 primitives by
default; the plugin sets 256 where ONEDNN_PRIMITIVE_CACHE_CAPACITY is unset, see
vllm_qwen3next/fixes/onednn_cache.py) keeps more. Prints one line per configuration and a JSON summary.
Measured (tiny checkpoint, 2-core AVX-512 CPU, lengths 16-215), worker growth over 200 new lengths:
float32 +421 MB with 1024 (flat after about 175 lengths), +111 MB with the plugin's 256 (flat after
50), +70 MB with 64; bfloat16 +506 / +126 / +91 MB. The same lengths again: +0 MB.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _worker_rss_mb() -> float:
    import psutil

    workers = [p for p in psutil.Process().children(recursive=True) if "Worker" in p.name()]
    if len(workers) != 1:
        raise RuntimeError(f"expected one model worker process, found {[p.name() for p in workers]}")
    return workers[0].memory_info().rss / 2**20


def _run_one(checkpoint: str, dtype: str, n_lengths: int, start: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=checkpoint, dtype=dtype, enforce_eager=True, max_model_len=4096,
              max_num_batched_tokens=4096, enable_prefix_caching=False, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=1)

    def run(length: int) -> None:
        llm.generate([TokensPrompt(prompt_token_ids=[(7 * i) % 1000 + 3 for i in range(length)])],
                     params, use_tqdm=False)

    for length in (1, 2, 3):
        run(length)
    base = _worker_rss_mb()
    lengths = list(range(start, start + n_lengths))
    curve, t0 = [], time.perf_counter()
    for k, length in enumerate(lengths, 1):
        run(length)
        if k % 25 == 0 or k == n_lengths:
            curve.append((k, round(_worker_rss_mb() - base, 1)))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for length in lengths:
        run(length)
    return {"dtype": dtype, "cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "unset"),
            "lengths": n_lengths, "base_mb": round(base, 1), "growth_mb": curve,
            "repeat_growth_mb": round(_worker_rss_mb() - base - curve[-1][1], 1),
            "first_pass_s": round(first_s, 1), "repeat_pass_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--lengths", type=int, default=200, help="distinct prompt lengths (default 200)")
    ap.add_argument("--start", type=int, default=16, help="shortest prompt length (default 16)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--caches", nargs="+", default=["1024"],
                    help="ONEDNN_PRIMITIVE_CACHE_CAPACITY values ('unset': the plugin's default)")
    ap.add_argument("--one", nargs=2, metavar=("DTYPE", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_run_one(args.checkpoint, args.one[0], args.lengths, args.start)), flush=True)
        return
    results = []
    for dtype in args.dtypes:
        for cache in args.caches:
            env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
            env.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
            if cache != "unset":
                env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = cache
            proc = subprocess.run([sys.executable, __file__, args.checkpoint, "--one", dtype, cache,
                                   "--lengths", str(args.lengths), "--start", str(args.start)],
                                  env=env, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"{dtype} cache {cache} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            r = json.loads(lines[0][len("RESULT "):])
            results.append(r)
            per_length = r["growth_mb"][-1][1] / r["lengths"]
            print(f"{dtype:9s} cache {cache:>6s}: worker {r['base_mb']:.0f} MB, +{r['growth_mb'][-1][1]:.0f} MB "
                  f"over {r['lengths']} new lengths ({per_length:.2f} MB each; curve {r['growth_mb']}), "
                  f"repeat +{r['repeat_growth_mb']:.0f} MB; {r['first_pass_s']:.0f} s / {r['repeat_pass_s']:.0f} s",
                  flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
