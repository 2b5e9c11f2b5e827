"""vLLM 0.32 for CPU: the fix that makes speculative decoding with sampling correct.

Without Triton, vLLM's CPU platform swaps the rejection sampler's Triton kernels for C++
ones (`CpuPlatform.register_triton_kernel_overrides`). Its `expand_kernel` stand-in
(`vllm.utils.cpu_triton_utils._expand_kernel_impl`) converts every tensor it gets with
`.to(torch.int64)`, so when the sampler expands the per-request temperature (float32) or
top-k (int32) to one value per draft position, the C++ kernel fills a temporary int64
copy and the real output keeps uninitialised memory. The verified tokens are then sampled
from logits divided by garbage temperatures (a wrong law, for vLLM's built-in MTP too),
and a garbage top-k crashes `apply_top_k_only`. Greedy requests never expand, so greedy
speculative decoding is unaffected.

`install()` registers a dtype-preserving expand over vLLM's. It must run in the worker
after the platform's overrides (the worker registers them right after loading plugins),
so the model's constructor calls it.
"""

import torch

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")

EXPAND_KERNEL = "vllm.v1.sample.rejection_sampler.expand_kernel"


def expand_kernel(output: torch.Tensor, input_val: torch.Tensor, cu_num_tokens: torch.Tensor,
                  replace_from, replace_to, MAX_NUM_TOKENS=None) -> None:  # noqa: N803 (the kernel's name)
    """output[cu[i-1]:cu[i]] = input[i], with replace_from mapped to replace_to; in output's dtype."""
    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    values = torch.where(input_val == replace_from, torch.as_tensor(replace_to, dtype=input_val.dtype), input_val)
    n = int(cu_num_tokens[-1]) if cu_num_tokens.numel() else 0
    output[:n] = torch.repeat_interleave(values, counts, output_size=n).to(output.dtype)


def install() -> None:
    """Replace vLLM's CPU expand kernel with ours where vLLM's broken one is registered."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.triton_utils import dispatcher
    from vllm.utils import cpu_triton_utils
    from vllm.v1.sample.ops import topk_topp_sampler

    top_k_only = topk_topp_sampler.apply_top_k_only
    if not getattr(top_k_only, "passes_empty_batches", False):
        def apply_top_k_only(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return logits if logits.shape[0] == 0 else top_k_only(logits, k)

        apply_top_k_only.passes_empty_batches = True
        topk_topp_sampler.apply_top_k_only = apply_top_k_only

    registered = dispatcher._registry.get(EXPAND_KERNEL)
    if registered is None or registered[1] is not cpu_triton_utils._expand_kernel_impl:
        return  # Triton CPU present, or already replaced
    dispatcher.register_kernels({EXPAND_KERNEL: expand_kernel})
    logger.info("vllm_qwen3next: replaced vLLM's CPU expand kernel of the rejection sampler "
                "(it drops float and int32 values: wrong sampling law under speculative decoding)")
