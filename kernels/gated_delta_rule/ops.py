"""Op registration: torch.ops.qwen3next.chunk_gated_delta_rule and
torch.ops.qwen3next.fused_recurrent_gated_delta_rule.

T = total tokens, B = sequences of a decode batch, N = sequences, S = state slots,
H = key heads, HV = value heads (value head j reads key head j // (HV // H)), K = key head dim, V = value head dim.
Index tensors are int32; slot -1 is padding (no state read or written, outputs zeros).
"""
import torch

from .chunk import chunk_gated_delta_rule_cpu
from .fused_recurrent import fused_recurrent_gated_delta_rule_cpu


@torch.library.custom_op("qwen3next::chunk_gated_delta_rule", mutates_args=("ssm_states",), device_types="cpu")
def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           scale: float, ssm_states: torch.Tensor, cu_seqlens: torch.Tensor,
                           state_indices: torch.Tensor, has_initial_state: torch.Tensor,
                           use_qk_l2norm: bool) -> torch.Tensor:
    """Gated delta rule over a varlen batch (prefill), continuing each sequence's recurrent state.

    Per sequence and value head, with S: [K, V] and q_t, k_t read from key head hv // (HV // H):
        q_t, k_t <- l2norm (x * rsqrt(sum(x^2) + 1e-6)) if use_qk_l2norm;  q_t <- q_t * scale
        S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T q_t

    Args:
        q, k: [T, H, K]. v: [T, HV, V]. g: [T, HV] fp32 (log decay, <= 0). beta: [T, HV] fp32.
        scale: multiplies q after the l2norm.
        ssm_states: [S, HV, K, V] fp32 or bf16, mutated: read (as fp32) when has_initial_state, else S starts
            at zero; the final S is written back in the cache dtype.
        cu_seqlens: [N+1] int32. state_indices: [N] int32 (-1: skip). has_initial_state: [N] bool.
        use_qk_l2norm: l2-normalise q and k per head.

    Returns:
        o: [T, HV, V] in v.dtype.
    """
    return chunk_gated_delta_rule_cpu(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                      has_initial_state, use_qk_l2norm)


@chunk_gated_delta_rule.register_fake
def _(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, has_initial_state, use_qk_l2norm):
    return v.new_empty(v.shape)


@torch.library.custom_op("qwen3next::fused_recurrent_gated_delta_rule", mutates_args=("ssm_states",),
                         device_types="cpu")
def fused_recurrent_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                     beta: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                                     state_indices: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
    """One decode step per sequence: the recurrence of chunk_gated_delta_rule for a single token, always
    starting from the slot's state.

    Args:
        q, k: [B, H, K]. v: [B, HV, V]. g: [B, HV] fp32. beta: [B, HV] fp32. scale: multiplies q.
        ssm_states: [S, HV, K, V] fp32 or bf16, mutated. state_indices: [B] int32 (-1: skip).
        use_qk_l2norm: l2-normalise q and k per head.

    Returns:
        o: [B, HV, V] in v.dtype.
    """
    return fused_recurrent_gated_delta_rule_cpu(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm)


@fused_recurrent_gated_delta_rule.register_fake
def _(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm):
    return v.new_empty(v.shape)
