"""torch.ops.qwen3next.gated_rms_norm: schema, fake, the CPU implementation, the CUDA backends."""
import torch

from .cpu import gated_rms_norm_cpu

CUDA_BACKENDS = {"gated_rms_norm": {"triton": "qwen3next_kernels.norm.triton:gated_rms_norm_triton"}}


@torch.library.custom_op("qwen3next::gated_rms_norm", mutates_args=(), device_types="cpu")
def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over V gated by SiLU(z), as transformers' Qwen3NextRMSNormGated.

    Args:
        x: [T, HV, V]. z: [T, HV, V] (the gate). weight: [V]. eps: added to the mean square.

    Returns:
        out: [T, HV, V] in x.dtype: h = x * rsqrt(mean(x^2) + eps) in fp32, rounded to x.dtype,
        then weight * h * silu(z) in fp32, rounded to x.dtype.
    """
    return gated_rms_norm_cpu(x, z, weight, eps)


@gated_rms_norm.register_fake
def _(x, z, weight, eps):
    return x.new_empty(x.shape)
