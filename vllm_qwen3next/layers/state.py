"""The Gated DeltaNet state kept per sequence next to the paged KV cache.

Per GDN layer and cache slot: the conv state ``[L, D]`` (the last L conv inputs,
oldest first; L = W - 1 + speculative tokens, D = conv channels on this rank) in
the model dtype, and the recurrent state of each value head in float32 unless
``--mamba-ssm-cache-dtype`` says otherwise (vLLM's built-in defaults it to the
model dtype, which costs accuracy in bf16).

The recurrent state is stored ``[HV, V, K]`` on CUDA (as vLLM and FlashInfer keep it:
a block of V rows is contiguous, which the decode kernels need to run at copy
bandwidth) and ``[HV, K, V]`` on CPU (what the C++ decode step vectorises over).
The ops take ``[HV, K, V]``-shaped states either way (the layer passes the free
transposed view), so no op transposes a state. ``QWEN3NEXT_SSM_STATE_LAYOUT``
(``vk`` or ``kv``) overrides the choice.
"""

import os

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
    K, V = config.linear_key_head_dim, config.linear_value_head_dim
    ssm_shape = (value_heads, V, K) if ssm_state_is_vk() else (value_heads, K, V)
    return conv_shape, ssm_shape


def ssm_state_is_vk() -> bool:
    """Whether the recurrent state cache is laid out [HV, V, K] (see the module docstring)."""
    layout = os.environ.get("QWEN3NEXT_SSM_STATE_LAYOUT")
    if layout is None:
        from vllm.platforms import current_platform

        triton_on_cpu = os.environ.get("QWEN3NEXT_TRITON_CPU") == "1"  # the CUDA code path, on CPU
        return current_platform.is_cuda_alike() or triton_on_cpu
    if layout not in ("vk", "kv"):
        raise ValueError(f"QWEN3NEXT_SSM_STATE_LAYOUT must be 'vk' or 'kv', got {layout!r}")
    return layout == "vk"



def gdn_state_dtypes(vllm_config: VllmConfig) -> tuple[torch.dtype, torch.dtype]:
    cache_config = vllm_config.cache_config
    conv_dtype = get_kv_cache_torch_dtype(
        cache_config.mamba_cache_dtype, vllm_config.model_config.dtype
    )
    ssm_name = cache_config.mamba_ssm_cache_dtype
    ssm_dtype = torch.float32 if ssm_name == "auto" else STR_DTYPE_TO_TORCH_DTYPE[ssm_name]
    return conv_dtype, ssm_dtype
