"""vllm-qwen3next: Qwen3-Next for vLLM, with our own model classes and kernels.

vLLM calls :func:`register` (entry point group ``vllm.general_plugins``) in every
process it starts. It only records lazy ``"module:Class"`` strings, so it imports
neither torch nor the model code and never touches CUDA.
"""

import logging

__version__ = "0.1.0"

# Architectures we take over from vLLM's built-in registry.
ARCHITECTURES = {
    "Qwen3NextForCausalLM": "vllm_qwen3next.model:Qwen3NextForCausalLM",
    "Qwen3NextMTP": "vllm_qwen3next.mtp:Qwen3NextMTP",
}

logger = logging.getLogger("vllm.vllm_qwen3next")
_registered = False


def register() -> None:
    """Point vLLM's registry at our classes (idempotent)."""
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry

    from vllm_qwen3next.fixes import echo
    from vllm_qwen3next.fixes import onednn_cache
    from vllm_qwen3next.fixes import kv_cache_layout

    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
    echo.install()  # vLLM 0.32: echo of a prompt whose text is empty (API server)
    onednn_cache.install()  # vLLM 0.32 CPU: memory per new prompt length (before workers start)
    kv_cache_layout.install()  # vLLM 0.32: pipeline stages with different backends
    _registered = True
    logger.info(
        "vllm_qwen3next %s registered, replacing vLLM's built-in %s",
        __version__,
        ", ".join(sorted(ARCHITECTURES)),
    )
