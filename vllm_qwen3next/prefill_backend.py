"""vLLM's --gdn-prefill-backend (additional_config["gdn_prefill_backend"]) on our chunked-prefill op.

The built-in reads it in _resolve_gdn_prefill_backend: "flashinfer" (its default where FlashInfer's kernel serves the
GPU: Hopper, Blackwell with CUDA 13), "triton" (its Triton port of fla's kernels), "cutedsl" (its own CuTe DSL kernel,
SM100 only), "aiter_flydsl" (ROCm); a backend the GPU cannot run, or a name it does not know, falls back to
"triton". Ours maps each request onto our backends with the same fallbacks: "triton" prefers the fla backend (the
same kernels), then our Triton kernel; "flashinfer" is our default already. We have no counterpart of "cutedsl": where
the built-in would run it (SM100) the request is refused at start (check, from refuse_unsupported). QWEN3NEXT_KERNELS,
where it names the op, wins over the flag.
"""
from vllm.config import VllmConfig
from vllm.platforms import current_platform

from qwen3next_kernels import backends

OP = "chunk_gated_delta_rule"
PREFER = {"flashinfer": ["flashinfer"], "triton": ["fla", "triton"], "cutedsl": ["fla", "triton"]}


def requested(vllm_config: VllmConfig) -> str:
    extra = getattr(vllm_config, "additional_config", None)  # a dict on every VllmConfig; absent on stand-ins
    value = extra.get("gdn_prefill_backend", "auto") if isinstance(extra, dict) else "auto"
    return str(value or "auto").strip().lower()


def check(vllm_config: VllmConfig) -> None:
    """Refuse at start what we cannot serve the way the built-in would."""
    backend = requested(vllm_config)
    if backend == "cutedsl" and current_platform.is_cuda() and current_platform.is_device_capability_family(100):
        raise ValueError(
            "vllm_qwen3next has no counterpart of vLLM's in-tree CuTe DSL GDN prefill (--gdn-prefill-backend "
            "cutedsl, Blackwell SM100): leave the flag out (FlashInfer's GDN prefill serves this GPU), pass "
            "flashinfer or triton, or serve the checkpoint with vLLM's built-in Qwen3-Next (VLLM_PLUGINS=)."
        )
    if backend == "aiter_flydsl" and not current_platform.is_rocm():
        raise ValueError(
            "--gdn-prefill-backend aiter_flydsl is ROCm AITER's GDN prefill: this platform is "
            f"{current_platform.device_name} (vLLM's built-in refuses it here too); pass flashinfer or triton."
        )


def apply(vllm_config: VllmConfig) -> None:
    """Register our chunked-prefill backend as the request asks (CUDA only; nothing to do for "auto"). The request
    has passed check already."""
    backend = requested(vllm_config)
    if backend != "auto" and current_platform.is_cuda():
        prefer = PREFER.get(backend, PREFER["triton"])  # anything else: the built-in's fallback, "triton"
        backends.register(prefer={OP: prefer})
