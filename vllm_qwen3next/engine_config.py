"""Engine-config adjustments for Qwen3-Next, applied by vLLM while it builds its config
(``MODELS_CONFIG_MAP``, before the hybrid-model page-size alignment runs)."""

from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig
from vllm.platforms import current_platform

logger = init_logger(f"vllm.{__name__}")


class Qwen3NextEngineConfig(VerifyAndUpdateConfig):
    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        cache_config = vllm_config.cache_config
        if (
            current_platform.is_cpu()
            and vllm_config.speculative_config is not None
            and cache_config.enable_prefix_caching
        ):
            # With prefix caching ("align" mode) and speculative decoding, vLLM 0.32
            # moves hybrid states between cache blocks with Triton-only kernels
            # (vllm/v1/worker/mamba_utils.py: precopy_mamba_align_fused_kernel and
            # the fused postprocess), which do not exist on CPU.
            logger.warning(
                "vllm_qwen3next: prefix caching is turned off: on CPU, vLLM 0.32 copies "
                "the hybrid (GDN) states between cache blocks under speculative decoding "
                "with Triton-only kernels"
            )
            cache_config.enable_prefix_caching = False
