"""Gated RMSNorm on CPU, the arithmetic of transformers' Qwen3NextRMSNormGated.

T = total tokens, HV = value heads, V = value head dim.
"""
import torch
import torch.nn.functional as F


def gated_rms_norm_cpu(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    V = x.shape[-1]
    assert x.dim() == 3 and z.shape == x.shape and weight.shape == (V,)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = weight * h.to(x.dtype)  # the rounding to x.dtype before the weight is transformers'
    return (h * F.silu(z.float())).to(x.dtype).contiguous()
