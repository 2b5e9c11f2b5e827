"""torch.ops.qwen3next.gdn_gating: schema, fake, the CPU implementation, the CUDA backends."""
import torch

from .cpu import gdn_gating_cpu

CUDA_BACKENDS = {"gdn_gating": {"triton": "qwen3next_kernels.gating.triton:gdn_gating_triton"}}


@torch.library.custom_op("qwen3next::gdn_gating", mutates_args=(), device_types="cpu")
def gdn_gating(A_log: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-space decay and write strength of the gated delta rule.

    Args:
        A_log: [HV] fp32. a: [T, HV]. b: [T, HV]. dt_bias: [HV].

    Returns:
        g: [T, HV] fp32, -exp(A_log) * softplus(a + dt_bias) (softplus beta 1, threshold 20).
        beta: [T, HV] fp32, sigmoid(b).
    """
    return gdn_gating_cpu(A_log, a, b, dt_bias)


@gdn_gating.register_fake
def _(A_log, a, b, dt_bias):
    return a.new_empty(a.shape, dtype=torch.float32), a.new_empty(a.shape, dtype=torch.float32)
