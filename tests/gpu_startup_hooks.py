"""Run in the engine's worker through ``LLM.apply_model`` (tests/engine_runner.py spec key "apply"):
vLLM's GPU start-up hooks that inspect model internals, called on our model where they can run
without CUDA. Each returns plain data (errors as text) for tests/test_gpu_startup.py."""

import time
import traceback
from types import SimpleNamespace

import torch


def _our_gdn_layers(model) -> dict:
    from vllm_qwen3next.layers.gdn import Qwen3NextGatedDeltaNet

    context = model.vllm_config.compilation_config.static_forward_context
    return {name: m for name, m in context.items() if isinstance(m, Qwen3NextGatedDeltaNet)}


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def vllm_qwen_gdn_warmup(model) -> dict:
    """vLLM's qwen_triton_warmup: its layer detection, its config builder and the whole
    warm-up with a CPU stand-in of the runner (the attributes it reads)."""
    from vllm.model_executor.warmup import qwen_triton_warmup as vllm_warmup

    context = model.vllm_config.compilation_config.static_forward_context
    ours = _our_gdn_layers(model)
    detect = vllm_warmup._is_qwen_gdn_layer
    # vLLM's own detection, as it ships (our warm-up module narrows it).
    vllm_detect = getattr(detect, "__wrapped__", detect)
    out = {
        "our_gdn_layers": len(ours),
        "caches_bound": sum(vllm_warmup._split_qwen_gdn_cache(m.kv_cache) is not None for m in ours.values()),
        "detected": sum(bool(detect(m)) for m in ours.values()),
        "detected_by_vllm_as_shipped": sum(bool(vllm_detect(m)) for m in ours.values()),
        "narrowed": detect is not vllm_detect,
        # vLLM's builder takes num_k_heads for the total and divides by tp_size; ours is per rank.
        "h_as_vllm_computes": sorted({m.num_k_heads // m.tp_size for m in ours.values()}),
        "h_per_rank": sorted({m.num_k_heads for m in ours.values()}),
    }
    try:
        config = vllm_warmup._qwen_gdn_warmup_config(context)
        out["config"] = None if config is None else {"h": config.h, "hv": config.hv}
    except Exception as err:  # noqa: BLE001  (the test reports it)
        out["config_error"] = _error(err)
    # What vLLM's builder does with our layer when nothing narrows the detection.
    vllm_warmup._is_qwen_gdn_layer = vllm_detect
    try:
        vllm_warmup._qwen_gdn_warmup_config(context)
        out["config_error_as_shipped"] = None
    except Exception as err:  # noqa: BLE001
        out["config_error_as_shipped"] = _error(err)
    finally:
        vllm_warmup._is_qwen_gdn_layer = detect
    runner = SimpleNamespace(
        device=torch.device("cpu"),
        compilation_config=model.vllm_config.compilation_config,
        max_num_tokens=model.vllm_config.scheduler_config.max_num_batched_tokens,
        max_num_reqs=model.vllm_config.scheduler_config.max_num_seqs,
        is_pooling_model=False,
        speculative_config=model.vllm_config.speculative_config,
    )
    try:
        vllm_warmup.qwen_triton_warmup(runner, model.vllm_config.model_config)
        out["warmup_error"] = None
    except Exception as err:  # noqa: BLE001
        out["warmup_error"] = _error(err)
    return out


CPU_OPS_MAX_SEQS = 16


def our_triton_warmup(model) -> dict:
    """Our GDN warm-up through vLLM's own JIT warm-up registry, as the GPU worker's kernel_warmup runs it.
    On CPU the cases run whatever implementation serves CPU tensors (Triton under the switch)."""
    from vllm.model_executor.warmup.jit_warmup import JitWarmupRegistry

    from vllm_qwen3next import warmup

    class Kernel(warmup.GDNTritonWarmup):
        """Runs every key through Triton; with our CPU ops (memory-hungry at hundreds of sequences,
        which a GPU never runs them with) only the keys of at most CPU_OPS_MAX_SEQS sequences."""

        def compile_many(self, compile_keys):
            self.keys = list(compile_keys)
            super().compile_many(self.keys)

        def compile(self, compile_key):
            if warmup.triton_serves("cpu") or compile_key.num_seqs <= CPU_OPS_MAX_SEQS:
                super().compile(compile_key)

    layers = _our_gdn_layers(model)
    config = model.vllm_config.model_config.hf_text_config
    tp = model.vllm_config.parallel_config.tensor_parallel_size
    kernel = Kernel()
    registry = JitWarmupRegistry(model.vllm_config)
    with registry.activate():
        for layer in layers.values():
            JitWarmupRegistry.register(kernel, layer)
    caches = [t[:4] for layer in layers.values() for t in layer.kv_cache[:2]]  # slot 0: vLLM's null block
    before = [t.clone() for t in caches]
    out = {
        "registered": len(registry),
        "triton_serves_cpu": warmup.triton_serves("cpu"),
        "expected_per_rank": [config.linear_num_key_heads // tp, config.linear_num_value_heads // tp],
        "max_num_seqs": model.vllm_config.scheduler_config.max_num_seqs,
    }
    t0 = time.perf_counter()
    try:
        registry.warmup()
        out["error"] = None
    except Exception:  # noqa: BLE001
        out["error"] = traceback.format_exc()
    out["warmup_s"] = time.perf_counter() - t0
    out["keys"] = [[k.step, k.num_seqs, k.tokens_per_seq] for k in getattr(kernel, "keys", [])]
    out["cases"] = [[k.step, k.num_seqs, k.tokens_per_seq] for k in kernel.cases_run]
    out["geometries"] = sorted(
        {(k.geometry.num_k_heads, k.geometry.num_v_heads, k.geometry.head_k_dim, k.geometry.head_v_dim,
          str(k.geometry.ssm_state[2])) for k in kernel.cases_run}
    )
    out["cache_untouched"] = all(torch.equal(a, b) for a, b in zip(before, caches))
    return out


STARTUP_HOOKS = ["gpu_startup_hooks:vllm_qwen_gdn_warmup", "gpu_startup_hooks:our_triton_warmup"]


def cpu_kernels(model) -> dict:
    """Which function serves CPU tensors for each qwen3next op, whether it is the op's Triton backend,
    and the recurrent-state layout of the bound cache (the CUDA path keeps it [HV, V, K])."""
    from torch._library.custom_ops import OPDEFS

    from qwen3next_kernels import backends
    from vllm_qwen3next.layers.state import ssm_state_is_vk

    def registered(fn):  # torch's register_kernel keeps the function in its wrappers' closures
        while "fn" in fn.__code__.co_freevars:
            fn = fn.__closure__[fn.__code__.co_freevars.index("fn")].cell_contents
        return fn

    ops = {}
    for op, table in backends._tables().items():
        served = registered(OPDEFS[f"qwen3next::{op}"]._backend_fns["cpu"])
        ops[op] = {
            "cpu": f"{served.__module__}.{served.__qualname__}",
            "is_triton": "triton" in table and served is backends.resolve(table["triton"]),
        }
    layer = next(iter(_our_gdn_layers(model).values()))
    return {
        "ops": ops,
        "ssm_state_vk": ssm_state_is_vk(),
        "ssm_cache_slot_shape": list(layer.kv_cache[1].shape[1:]),
        "head_dims": [layer.head_k_dim, layer.head_v_dim],
    }
