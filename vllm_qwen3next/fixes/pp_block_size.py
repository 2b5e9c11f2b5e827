"""vLLM 0.32: the fix that gives a GDN-only pipeline stage the block size of the others.

After loading the model each worker fits the cache block size to its attention backends
(`Platform.update_block_size_for_backend`, called by the worker process): for a hybrid model
it raises the attention block until an attention page holds a GDN state, sets the GDN block
size to it in prefix-caching "align" mode and pads the GDN page to the attention page
(`_align_hybrid_block_size`). It finds the backends among its own layers only
(`_find_non_ssm_backends`), so a stage holding only GDN layers finds none and returns: its
GDN layers keep the default block of 16 tokens and an unpadded page while the other
stages use 128 (tiny model on CPU; engine log "kv cache group sizes (16, 16, 128, ...)").
Without prefix caching nothing reads the difference; with it, GDN states are saved and
reused at the wrong block boundaries on that stage, and a prefix-cache hit gives wrong
tokens (tests/test_pipeline_parallel.py, PP 2 with layers 0-2 on stage 0).

`install()` lets a stage of a hybrid model that holds no attention layer use the backend
vLLM selects for the model's attention (as `get_current_attn_backends` does when it finds
no layers), so every stage computes the same block and page sizes. The model's constructor
calls it under pipeline parallelism, before the worker fits the block size.
"""

from types import SimpleNamespace

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")


def skips_attention_free_stages(platform) -> bool:
    """True where ``platform`` leaves the block size of a hybrid stage without attention
    layers untouched (vLLM 0.32)."""
    cache_config = SimpleNamespace(block_size=16, mamba_block_size=None, mamba_page_size_padded=None)
    stage = SimpleNamespace(
        model_config=SimpleNamespace(is_hybrid=True),
        cache_config=cache_config,
        compilation_config=SimpleNamespace(static_forward_context={}),
    )
    try:
        platform.update_block_size_for_backend(stage)
    except Exception:  # noqa: BLE001  (it went on to align: not the fault we know)
        return False
    return vars(cache_config) == dict(block_size=16, mamba_block_size=None, mamba_page_size_padded=None)


def install() -> None:
    """Give attention-free stages of hybrid models the model's attention backend for sizing."""
    from vllm.platforms import current_platform

    platform = type(current_platform)
    find = platform._find_non_ssm_backends
    if getattr(find, "falls_back_to_model_backend", False) or not skips_attention_free_stages(platform):
        return
    find_in_stage = find.__func__

    def _find_non_ssm_backends(cls, vllm_config):
        backends = find_in_stage(cls, vllm_config)
        if backends or not vllm_config.model_config.is_hybrid:
            return backends
        from vllm.config.vllm import set_current_vllm_config
        from vllm.v1.attention.selector import get_attn_backend

        model_config = vllm_config.model_config
        with set_current_vllm_config(vllm_config):
            backend = get_attn_backend(
                head_size=model_config.get_head_size(),
                dtype=model_config.dtype,
                kv_cache_dtype=vllm_config.cache_config.cache_dtype,
                use_mla=model_config.use_mla,
            )
        logger.info_once(
            "vllm_qwen3next: this pipeline stage holds no attention layer; its cache block "
            "size is fitted to the model's attention backend %s, as on the other stages "
            "(vLLM 0.32 fits it to the stage's own layers only)",
            backend.get_name(),
        )
        return [backend]

    _find_non_ssm_backends.falls_back_to_model_backend = True
    platform._find_non_ssm_backends = classmethod(_find_non_ssm_backends)
