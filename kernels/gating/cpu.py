"""GDN gating on CPU."""
import torch
import torch.nn.functional as F


def gdn_gating_cpu(A_log: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    T, HV = a.shape
    assert b.shape == (T, HV) and A_log.shape == (HV,) and dt_bias.shape == (HV,)
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias.float())  # [T, HV]
    beta = b.float().sigmoid()  # [T, HV]
    return g.contiguous(), beta.contiguous()
