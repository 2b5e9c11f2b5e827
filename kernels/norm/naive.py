"""Reference gated RMSNorm, one token at a time, fp32. This file is the specification."""
import torch


def naive_gated_rms_norm(x, z, weight, eps):
    """x: [T, HV, V], z: [T, HV, V], weight: [V] -> out [T, HV, V] fp32:
    weight * x / sqrt(mean(x^2) + eps) * silu(z), per token and value head."""
    weight = weight.float()
    out = torch.zeros(x.shape)
    for t in range(x.shape[0]):
        x_t, z_t = x[t].float(), z[t].float()  # [HV, V]
        rms = torch.sqrt((x_t * x_t).mean(-1, keepdim=True) + eps)  # [HV, 1]
        out[t] = weight * (x_t / rms) * (z_t / (1 + torch.exp(-z_t)))
    return out
