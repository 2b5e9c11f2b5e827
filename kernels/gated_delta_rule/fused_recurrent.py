"""One decode step of the gated delta rule on CPU, fp32 math: the C++ kernel (csrc/gdn_decode_cpu.cpp, in place on
the cache) where it is built, else this PyTorch form, vectorised over sequences and heads.

B' = sequences with a slot, BH = B' * HV.

From the old state h (per sequence and value head): h^T k and h^T q in one read of h, then
    v_new = beta (v - exp(g) h^T k),   o = exp(g) h^T q + (q . k) v_new,   h <- exp(g) h + k v_new^T (in place).
"""
import torch

from .. import cpu_ext
from ..utils.cpu import l2norm


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
    if cpu_ext.available() and _ext_fits(q, k, v, ssm_states):
        return torch.ops.qwen3next_cpu.fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states,
                                                                        state_indices, use_qk_l2norm)

    o = torch.zeros(B, HV, V, dtype=v.dtype)
    rows = (state_indices >= 0).nonzero().squeeze(1)  # padded entries (slot -1) are skipped
    slots = state_indices[rows].long()
    BH = rows.shape[0] * HV
    q, k = q[rows].float(), k[rows].float()
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q = q * scale
    qk = torch.stack([q, k], 2).repeat_interleave(G, 1).view(BH, 2, K)  # value head j reads key head j // G
    decay = g[rows].float().exp().view(BH, 1, 1)
    beta = beta[rows].float().view(BH, 1, 1)

    state = ssm_states.index_select(0, slots).float().view(BH, K, V)
    Sq, Sk = (decay * torch.bmm(qk, state)).unbind(1)  # [BH, V] each
    v_new = beta * (v[rows].float().view(BH, 1, V) - Sk[:, None])  # [BH, 1, V]
    o[rows] = (Sq[:, None] + (qk[:, 0] * qk[:, 1]).sum(-1)[:, None, None] * v_new).view(-1, HV, V).to(o.dtype)
    state.mul_(decay).baddbmm_(qk[:, 1, :, None], v_new)
    ssm_states.index_copy_(0, slots, state.view(-1, HV, K, V).to(ssm_states.dtype))
    return o


def _ext_fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ssm_states: torch.Tensor) -> bool:
    """The C++ kernel takes fp32 or bf16 q, k, v of one dtype and states, each with a unit last stride."""
    fits = (torch.float32, torch.bfloat16)
    return (q.dtype in fits and k.dtype == q.dtype and v.dtype == q.dtype and ssm_states.dtype in fits
            and all(t.stride(-1) == 1 for t in (q, k, v, ssm_states)))
