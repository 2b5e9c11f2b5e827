"""One decode step of the gated delta rule on CPU, vectorised over sequences and heads, fp32.

B = sequences of a decode batch, S = state slots, H = key heads, HV = value heads, G = HV // H,
K = key head dim, V = value head dim.
"""
import torch

from .utils import l2norm


def fused_recurrent_gated_delta_rule_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                         beta: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                                         state_indices: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
    B, H, K = q.shape
    HV, V = v.shape[1:]
    assert k.shape == (B, H, K) and v.shape == (B, HV, V) and HV % H == 0
    assert g.shape == (B, HV) and beta.shape == (B, HV)
    assert ssm_states.dim() == 4 and ssm_states.shape[1:] == (HV, K, V)
    assert state_indices.dtype == torch.int32 and state_indices.shape == (B,)
    G = HV // H

    o = torch.zeros(B, HV, V, dtype=v.dtype)
    rows = (state_indices >= 0).nonzero().squeeze(1)  # padded entries (slot -1) are skipped
    slots = state_indices[rows].long()
    Bv = rows.shape[0]
    q, k = q[rows].float(), k[rows].float()
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q = (q * scale).view(Bv, H, 1, 1, K)
    k = k.view(Bv, H, 1, K, 1)
    v = v[rows].float().view(Bv, H, G, 1, V)
    g = g[rows].float().view(Bv, H, G, 1, 1)
    beta = beta[rows].float().view(Bv, H, G, 1, 1)

    state = ssm_states[slots].float().view(Bv, H, G, K, V) * g.exp()
    v_new = beta * (v - k.mT @ state)  # [Bv, H, G, 1, V]
    state += k * v_new
    o[rows] = (q @ state).view(Bv, HV, V).to(o.dtype)
    ssm_states[slots] = state.view(Bv, HV, K, V).to(ssm_states.dtype)
    return o
