"""Gated RMSNorm on CPU, the arithmetic of transformers' Qwen3NextRMSNormGated."""
import torch
import torch.nn.functional as F


BLOCK_T = 64  # tokens per block: keeps the fp32 scratch in cache


def _gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = weight * h.to(x.dtype)  # the rounding to x.dtype before the weight is transformers'
    return h * F.silu(z.float())


def gated_rms_norm_cpu(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    T, HV, V = x.shape
    assert z.shape == x.shape and weight.shape == (V,)
    out = torch.empty(T, HV, V, dtype=x.dtype)
    for t0 in range(0, T, BLOCK_T):
        out[t0:t0 + BLOCK_T] = _gated_rms_norm(x[t0:t0 + BLOCK_T], z[t0:t0 + BLOCK_T], weight, eps)
    return out
