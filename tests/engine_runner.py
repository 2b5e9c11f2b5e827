"""Run one vLLM engine configuration in its own process and dump what tests compare.

Each engine runs in a fresh subprocess so that plugin selection (``VLLM_PLUGINS``)
and engine settings cannot leak between configurations. Usage:

    python tests/engine_runner.py SPEC.json OUT.json

SPEC: {"llm": {LLM kwargs}, "prompts": [[token ids], ...], "max_tokens": 32, "env": {...},
       optional "prompt_logprobs" (k > 0: also each prompt position's top token, "prompt_argmax"),
       "replay_outputs", "sampling", "bad_prompts", "extra_passes", "apply" (see _main),
       or "sessions" instead of "prompts": multi-turn greedy sessions in one engine (run_sessions)}.
OUT: per prompt the prompt-token log-probs, greedy output ids and their log-probs,
plus the classes that ran, metrics and engine timings.
"""

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def describe_model(model) -> dict:
    """Runs inside the worker: which classes make up the model that serves."""
    return {
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "layers": sorted(
            {
                f"{type(m).__module__}.{type(m).__qualname__}"
                for name, m in model.named_modules()
                if name.rsplit(".", 1)[-1] in ("linear_attn", "self_attn", "mlp")
            }
        ),
    }


def _main(spec_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import engine_runner

    spec = json.loads(Path(spec_path).read_text())
    llm_args = {"disable_log_stats": False} | spec["llm"]
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0" and _ranks(spec) == 1:
        llm_args.setdefault("distributed_executor_backend", "uni")  # the worker in this process (run_engine)
    t0 = time.perf_counter()
    llm = LLM(**llm_args)
    start_s = time.perf_counter() - t0
    print(f"engine_runner: engine started in {start_s:.1f} s", flush=True)
    if "sessions" in spec:
        t0 = time.perf_counter()
        import engine_runner as runner  # by module path: functions sent to the worker

        sessions = runner.run_sessions(llm, spec["sessions"])
        summary = {"sessions": sessions, "metrics": _metrics(llm), "engine_start_s": start_s,
                   "generate_s": time.perf_counter() - t0,
                   "block_size": runner.engine_block_size(llm),
                   "classes": llm.apply_model(engine_runner.describe_model)[0]}
        Path(out_path).write_text(json.dumps(summary))
        return
    prompts = [TokensPrompt(prompt_token_ids=p) for p in spec["prompts"]]
    sampling = spec.get("sampling")
    if sampling is None:
        params = SamplingParams(
            temperature=0.0,
            max_tokens=spec.get("max_tokens", 32),
            ignore_eos=True,
            logprobs=0,
            prompt_logprobs=spec.get("prompt_logprobs", 0),
        )
    else:  # one seed per request, so identical prompts give independent samples
        params = [
            SamplingParams(
                temperature=sampling["temperature"],
                top_k=sampling.get("top_k", 0),
                top_p=sampling.get("top_p", 1.0),
                max_tokens=spec.get("max_tokens", 32),
                ignore_eos=True,
                seed=i if sampling.get("per_request_seed", True) else None,
            )
            for i in range(len(prompts))
        ]
    t0 = time.perf_counter()
    lora = None
    if spec.get("lora"):  # a LoRA adapter folder applied to every prompt
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, spec["lora"])
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
    gen_s = time.perf_counter() - t0
    results = []
    for prompt, out in zip(spec["prompts"], outputs):
        completion = out.outputs[0]
        if sampling is not None:
            results.append({"output_ids": list(completion.token_ids)})
            continue
        prompt_lp = [None] + [
            entry[tok].logprob for entry, tok in zip(out.prompt_logprobs[1:], prompt[1:])
        ]
        results.append(
            {
                "prompt_logprobs": prompt_lp,
                "output_ids": list(completion.token_ids),
                "output_logprobs": [
                    entry[tok].logprob for entry, tok in zip(completion.logprobs, completion.token_ids)
                ],
            }
        )
        if spec.get("prompt_logprobs"):  # the engine's top token at every prompt position
            results[-1]["prompt_argmax"] = [None] + [
                next(t for t, lp in entry.items() if lp.rank == 1) for entry in out.prompt_logprobs[1:]
            ]
    if spec.get("replay_outputs"):
        # Prefill prompt + greedy output in one pass: its prompt log-probs over the
        # output positions must equal the decode-time log-probs.
        replay = [p + r["output_ids"] for p, r in zip(spec["prompts"], results)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in replay], params, use_tqdm=False)
        for ids, out, r in zip(replay, outs, results):
            n = len(r["output_ids"])
            r["replay_logprobs"] = [
                entry[tok].logprob for entry, tok in zip(out.prompt_logprobs[-n:], ids[-n:])
            ]
    # Requests that must be refused with an error while the engine keeps serving.
    refused = []
    for bad in spec.get("bad_prompts", []):
        try:
            llm.generate([TokensPrompt(prompt_token_ids=bad)], params, use_tqdm=False)
            refused.append(None)
        except Exception as err:  # noqa: BLE001  (the message is what the test checks)
            refused.append(f"{type(err).__name__}: {err}")
    # Extra greedy passes over subsets of the prompts, one generate() call each,
    # in order (one by one, a second round for prefix-cache hits, ...).
    passes = []
    for indices in spec.get("extra_passes", []):
        outs = llm.generate(
            [prompts[i] for i in indices],
            SamplingParams(temperature=0.0, max_tokens=spec.get("max_tokens", 32), ignore_eos=True),
            use_tqdm=False,
        )
        passes.append([list(o.outputs[0].token_ids) for o in outs])
    # "seeded_passes": sampled passes (temperature 1), one generate() call each, of requests
    # [prompt index, seed or None]; their output ids come back as "seeded_passes".
    seeded_passes = []
    for requests in spec.get("seeded_passes", []):
        outs = llm.generate(
            [prompts[i] for i, _ in requests],
            [SamplingParams(temperature=1.0, seed=seed, max_tokens=spec.get("max_tokens", 32), ignore_eos=True)
             for _, seed in requests],
            use_tqdm=False,
        )
        seeded_passes.append([list(o.outputs[0].token_ids) for o in outs])
    metrics = _metrics(llm)
    # "module:function" run on the model in every worker after the requests
    # (LLM.apply_model); out["applied"][name] lists one result per rank.
    applied = {}
    for name in spec.get("apply", []):
        module, function = name.split(":")
        applied[name] = llm.apply_model(getattr(importlib.import_module(module), function))
    summary = {
        "applied": applied,
        "results": results,
        "passes": passes,
        "seeded_passes": seeded_passes,
        "refused": refused,
        "metrics": metrics,
        "engine_start_s": start_s,
        "generate_s": gen_s,
        "generated_tokens": sum(len(r["output_ids"]) for r in results),
        "prompt_tokens": sum(len(p) for p in spec["prompts"]),
        # By module path: a function from __main__ cannot be pickled to the worker.
        "classes": llm.apply_model(engine_runner.describe_model)[0],
    }
    Path(out_path).write_text(json.dumps(summary))


def _ranks(spec: dict) -> int:
    llm = spec["llm"]
    return llm.get("tensor_parallel_size", 1) * llm.get("pipeline_parallel_size", 1)


def _metrics(llm) -> dict:
    return {
        m.name: m.value
        for m in llm.get_metrics()
        if m.name.startswith(("vllm:spec_decode", "vllm:prefix_cache", "vllm:num_preemptions"))
        if hasattr(m, "value")
    }


def _worker_block_size(worker) -> int:
    return worker.vllm_config.cache_config.block_size


def engine_block_size(llm) -> int:
    """The KV cache block size the worker runs with (for hybrid models the executor aligns it
    to the state page size after the front end built its config)."""
    return llm.collective_rpc(_worker_block_size)[0]


def run_sessions(llm, spec: dict) -> list[list[dict]]:
    """Multi-turn greedy sessions, interleaved in rounds, in one engine.

    spec: {"block_size": B (default: the engine's), "sessions": [{"start": round, "system": [ids], "turns":
    [{"text": [ids], "length": (blocks, delta) or null, "max_tokens": n, "abort_after": m
    or null}], "fork": [session, turn] or null}]}.
    Round r runs turn r - start of every session at once. A turn's prompt is the previous
    turn's prompt + its output + the turn's text; with "length" [b, d] the text is cut
    (or the prompt before it cut) so that the prompt has b * B + d tokens. A session with
    "fork" [s, t] starts from session s's turn-t prompt + output (an exact prefix of
    session s's next prompt). "abort_after" m aborts the request once it has m output
    tokens; only its first m tokens are kept for the next turn. Returns per session and
    turn: prompt, output ids, aborted.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engine = llm.llm_engine
    block = spec.get("block_size") or engine_block_size(llm)
    sessions = spec["sessions"]
    done: list[list[dict]] = [[] for _ in sessions]
    history = [list(s.get("system", [])) for s in sessions]
    rounds = max(s.get("start", 0) + len(s["turns"]) for s in sessions)
    for r in range(rounds):
        pending = {}
        for i, s in enumerate(sessions):
            t = r - s.get("start", 0)
            if not 0 <= t < len(s["turns"]):
                continue
            turn = s["turns"][t]
            if t == 0 and s.get("fork"):
                src, src_turn = s["fork"]
                parent = done[src][src_turn]
                history[i] = parent["prompt"] + parent["kept"]
            prompt = history[i] + list(turn["text"])
            if turn.get("length"):  # counted in the engine's cache blocks of `block` tokens
                n = turn["length"][0] * block + turn["length"][1]
                if not len(history[i]) < n <= len(prompt):
                    raise ValueError(f"session {i} turn {t}: {n} tokens asked, history "
                                     f"{len(history[i])}, with text {len(prompt)}")
                prompt = prompt[:n]
            rid = f"s{i}-t{t}"
            pending[rid] = (i, prompt, turn)
            engine.add_request(
                rid,
                TokensPrompt(prompt_token_ids=prompt),
                SamplingParams(temperature=0.0, max_tokens=turn["max_tokens"], ignore_eos=True),
            )
        outputs = {rid: [] for rid in pending}
        aborted = set()
        while engine.has_unfinished_requests():
            for out in engine.step():
                outputs[out.request_id] = list(out.outputs[0].token_ids)
                limit = pending[out.request_id][2].get("abort_after")
                if limit and not out.finished and len(outputs[out.request_id]) >= limit:
                    engine.abort_request([out.request_id])
                    aborted.add(out.request_id)
        for rid, (i, prompt, turn) in pending.items():
            ids = outputs[rid]
            kept = ids[: turn["abort_after"]] if rid in aborted else ids
            done[i].append({"prompt": prompt, "output_ids": ids, "kept": kept, "aborted": rid in aborted})
            history[i] = prompt + kept
    return done


def run_engine(spec: dict, workdir: Path, name: str, timeout: float = 900) -> dict:
    """Run ``spec`` in a subprocess; return the parsed output (raises with the log on failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.out.json"
    log_path = workdir / f"{name}.log"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: each engine start zeroes it
    if _ranks(spec) == 1 and spec.get("env", {}).get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") == "0":
        # Engine core and worker in the engine's own process (_main): each process spared is an import of vLLM,
        # about 10 s of the 25-40 s an engine took to start on 2 cores. One OpenMP thread, as vLLM binds its
        # worker process to one core here: the same log-probs.
        env.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", OMP_NUM_THREADS="1")
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    # tests/ (not the repository root) on the path: the root holds a folder named
    # `kernels`, which transformers would mistake for Hugging Face's package.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.update(spec.get("env", {}))
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, str(HERE / "engine_runner.py"), str(spec_path), str(out_path)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    if proc.returncode != 0:
        log_text = log_path.read_text()
        errors = dict.fromkeys(line for line in log_text.splitlines() if "Error" in line)
        raise RuntimeError(
            f"engine {name} failed (exit {proc.returncode}); error lines:\n"
            + "\n".join(errors)
            + f"\n--- log tail ---\n{log_text[-4000:]}"
        )
    out = json.loads(out_path.read_text())
    out["log"] = log_path.read_text()
    return out


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
