"""The Gated DeltaNet state kept per sequence next to the paged KV cache.

Per GDN layer and cache slot: the conv state ``[L, D]`` (the last L conv inputs,
oldest first; L = W - 1 + speculative tokens, D = conv channels on this rank) in
the model dtype, and the recurrent state ``[HV, K, V]`` in float32 unless
``--mamba-ssm-cache-dtype`` says otherwise (vLLM's built-in defaults it to the
model dtype, which costs accuracy in bf16).
"""

import torch

from vllm.config import VllmConfig
from vllm.model_executor.layers.mamba.mamba_utils import is_conv_state_dim_first
from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE, get_kv_cache_torch_dtype


def gdn_state_shapes(vllm_config: VllmConfig) -> tuple[tuple[int, int], tuple[int, int, int]]:
    if is_conv_state_dim_first():
        raise ValueError(
            "vllm_qwen3next keeps the GDN conv state as (state_len, dim); "
            "unset VLLM_SSM_CONV_STATE_LAYOUT=DS"
        )
    config = vllm_config.model_config.hf_text_config
    tp = vllm_config.parallel_config.tensor_parallel_size
    spec = vllm_config.speculative_config
    num_spec = spec.num_speculative_tokens if spec is not None else 0
    key_heads = config.linear_num_key_heads // tp
    value_heads = config.linear_num_value_heads // tp
    conv_dim = (
        2 * key_heads * config.linear_key_head_dim + value_heads * config.linear_value_head_dim
    )
    conv_shape = (config.linear_conv_kernel_dim - 1 + num_spec, conv_dim)
    ssm_shape = (value_heads, config.linear_key_head_dim, config.linear_value_head_dim)
    return conv_shape, ssm_shape


def gdn_state_dtypes(vllm_config: VllmConfig) -> tuple[torch.dtype, torch.dtype]:
    cache_config = vllm_config.cache_config
    conv_dtype = get_kv_cache_torch_dtype(
        cache_config.mamba_cache_dtype, vllm_config.model_config.dtype
    )
    ssm_name = cache_config.mamba_ssm_cache_dtype
    ssm_dtype = torch.float32 if ssm_name == "auto" else STR_DTYPE_TO_TORCH_DTYPE[ssm_name]
    return conv_dtype, ssm_dtype
