"""Reference GDN gating, written out elementwise in fp32. This file is the specification."""
import torch


def naive_gdn_gating(A_log, a, b, dt_bias):
    """A_log: [HV], a: [T, HV], b: [T, HV], dt_bias: [HV] -> (g: [T, HV] fp32, beta: [T, HV] fp32)."""
    x = a.float() + dt_bias.float()
    softplus = torch.where(x > 20, x, torch.log1p(torch.exp(x)))  # beta 1, threshold 20
    g = -torch.exp(A_log.float()) * softplus
    beta = 1 / (1 + torch.exp(-b.float()))
    return g, beta
