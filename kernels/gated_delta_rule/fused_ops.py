"""Fused GDN ops beyond the base contract: the prefill with the gating inside, the whole decode step, and the
speculative verification step. On CPU each is composed of the base ops (the decode step runs the C++ kernel of
csrc/gdn_decode_cpu.cpp where it is built); triton_fused.py registers one-launch CUDA kernels under the same names.

T = total tokens, N = sequences, B = sequences of a decode batch, T1 = tokens per sequence in a verification
step (1 + draft tokens), S = state slots, D = conv channels (2 H K + HV V: q, then k, then v), W = conv width,
L = conv state length, H = key heads, HV = value heads, K = key head dim, V = value head dim.
Index tensors are int32; slot -1 is padding (no state read or written, outputs zeros).
"""
import torch

from .. import cpu_ext
from ..conv.ops import causal_conv1d_update
from ..gating.ops import gdn_gating
from ..norm.ops import gated_rms_norm
from .ops import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
from .utils import l2norm


@torch.library.custom_op("qwen3next::fused_gdn_prefill", mutates_args=("ssm_states",), device_types="cpu")
def fused_gdn_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                      A_log: torch.Tensor, dt_bias: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                      cu_seqlens: torch.Tensor, state_indices: torch.Tensor, has_initial_state: torch.Tensor,
                      use_qk_l2norm: bool) -> torch.Tensor:
    """chunk_gated_delta_rule with the gating inside: g, beta = gdn_gating(A_log, a, b, dt_bias).

    Args:
        q, k: [T, H, K]. v: [T, HV, V]. a, b: [T, HV] raw gate inputs. A_log: [HV] fp32. dt_bias: [HV].
        The rest as chunk_gated_delta_rule (ssm_states [S, HV, K, V] mutated).

    Returns:
        o: [T, HV, V] in v.dtype.
    """
    g, beta = gdn_gating(A_log, a, b, dt_bias)
    return chunk_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                  has_initial_state, use_qk_l2norm)


@fused_gdn_prefill.register_fake
def _(q, k, v, a, b, A_log, dt_bias, scale, ssm_states, cu_seqlens, state_indices, has_initial_state,
      use_qk_l2norm):
    return v.new_empty(v.shape)


@torch.library.custom_op("qwen3next::fused_gdn_decode", mutates_args=("conv_states", "ssm_states"),
                         device_types="cpu")
def fused_gdn_decode(mixed_qkv: torch.Tensor, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     conv_weight: torch.Tensor, conv_bias: torch.Tensor | None, conv_states: torch.Tensor,
                     A_log: torch.Tensor, dt_bias: torch.Tensor, norm_weight: torch.Tensor, norm_eps: float,
                     scale: float, ssm_states: torch.Tensor, state_indices: torch.Tensor,
                     use_qk_l2norm: bool) -> torch.Tensor:
    """The whole GDN decode step after the projections: conv update (SiLU), gating, l2norm, one recurrence step,
    gated RMSNorm readout.

    Args:
        mixed_qkv: [B, D] pre-conv q | k | v (unit channel stride; rows may be strided).
        z: [B, HV, V] the output gate. a, b: [B, HV] raw gate inputs.
        conv_weight: [D, W]. conv_bias: [D] or None. conv_states: [S, L, D], mutated.
        A_log: [HV] fp32. dt_bias: [HV]. norm_weight: [V]. norm_eps: the RMSNorm epsilon. scale: multiplies q.
        ssm_states: [S, HV, K, V] fp32 or bf16, mutated. state_indices: [B] int32 (-1: skip, outputs zeros).
        use_qk_l2norm: l2-normalise q and k.

    Returns:
        out: [B, HV, V] in mixed_qkv.dtype, gated_rms_norm(o, z, norm_weight, norm_eps).
    """
    if cpu_ext.available() and _decode_ext_fits(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, ssm_states):
        return torch.ops.qwen3next_cpu.gdn_decode(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log,
                                                  dt_bias, norm_weight, norm_eps, scale, ssm_states, state_indices,
                                                  use_qk_l2norm)
    B = mixed_qkv.shape[0]
    HV, K, V = ssm_states.shape[1:]
    H = (mixed_qkv.shape[1] - HV * V) // (2 * K)
    x = causal_conv1d_update(mixed_qkv, conv_weight, conv_bias, conv_states, state_indices, True)  # [B, D]
    q = x[:, :H * K].reshape(B, H, K)
    k = x[:, H * K:2 * H * K].reshape(B, H, K)
    v = x[:, 2 * H * K:].reshape(B, HV, V)
    g, beta = gdn_gating(A_log, a, b, dt_bias)
    o = fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm)
    return gated_rms_norm(o, z, norm_weight, norm_eps)


def _decode_ext_fits(mixed_qkv: torch.Tensor, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     conv_weight: torch.Tensor, conv_bias: torch.Tensor | None, conv_states: torch.Tensor,
                     ssm_states: torch.Tensor) -> bool:
    """The C++ decode takes fp32 or bf16 tensors: activations of one dtype with unit last strides, a contiguous conv
    weight with a bias of its dtype."""
    fits = (torch.float32, torch.bfloat16)
    return (all(t.dtype in fits for t in (mixed_qkv, conv_weight, conv_states, ssm_states))
            and all(t.dtype == mixed_qkv.dtype for t in (z, a, b))
            and all(t.stride(-1) == 1 for t in (mixed_qkv, z, a, b, ssm_states)) and conv_weight.is_contiguous()
            and (conv_bias is None or (conv_bias.dtype == conv_weight.dtype and conv_bias.is_contiguous())))


@fused_gdn_decode.register_fake
def _(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, norm_eps, scale,
      ssm_states, state_indices, use_qk_l2norm):
    HV, K, V = ssm_states.shape[1:]
    return mixed_qkv.new_empty(mixed_qkv.shape[0], HV, V)


def spec_cache_width(H: int, HV: int, K: int, V: int) -> int:
    """Per-token record of a verification step: l2-normalised k (H K), v (HV V), g (HV), beta (HV), fp32."""
    return H * K + HV * V + 2 * HV


@torch.library.custom_op("qwen3next::gated_delta_rule_verify", mutates_args=("ssm_states", "spec_cache"),
                         device_types="cpu")
def gated_delta_rule_verify(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                            beta: torch.Tensor, scale: float, ssm_states: torch.Tensor, spec_cache: torch.Tensor,
                            state_indices: torch.Tensor, num_replay: torch.Tensor,
                            use_qk_l2norm: bool) -> torch.Tensor:
    """Speculative verification: T1 tokens per sequence, writing one state instead of T1.

    The slot keeps the state from before the previous verification step plus that step's per-token inputs
    (spec_cache). This step first replays the first num_replay[b] recorded tokens (the accepted ones of the
    previous step; 0 right after a prefill or a plain decode), writes that state back as the new base, runs the
    T1 new tokens from it for the outputs, and records their inputs, so that the next step can continue from any
    accepted position.

    Args:
        q, k: [B * T1, H, K]. v: [B * T1, HV, V]. g, beta: [B * T1, HV] fp32 (sequence-major).
        scale: multiplies q. ssm_states: [S, HV, K, V] fp32 or bf16, mutated.
        spec_cache: [S, T1, H K + HV V + 2 HV] fp32 (spec_cache_width), mutated.
        state_indices: [B] int32 (-1: skip). num_replay: [B] int32 in [0, T1].
        use_qk_l2norm: l2-normalise q and k.

    Returns:
        o: [B * T1, HV, V] in v.dtype.
    """
    B = state_indices.shape[0]
    HV, K, V = ssm_states.shape[1:]
    H = q.shape[1]
    T1 = q.shape[0] // B
    assert q.shape[0] == B * T1 and spec_cache.shape[1:] == (T1, spec_cache_width(H, HV, K, V))
    live = state_indices >= 0
    slots = state_indices.clamp(min=0).long()
    HK = H * K
    for t in range(T1):  # replay, one recorded token at a time, straight into the cache
        rec = spec_cache[slots, t]  # [B, F]
        rec_k = rec[:, :HK].reshape(B, H, K).contiguous()
        idx = torch.where(live & (num_replay > t), state_indices, -1).to(torch.int32)
        fused_recurrent_gated_delta_rule(rec_k, rec_k, rec[:, HK:HK + HV * V].reshape(B, HV, V).contiguous(),
                                         rec[:, HK + HV * V:HK + HV * V + HV].contiguous(),
                                         rec[:, HK + HV * V + HV:].contiguous(), 1.0, ssm_states, idx, False)
    state = ssm_states[slots].clone()  # [B, HV, K, V], the new base; the T1 tokens run on this copy
    idx = torch.where(live, torch.arange(B, dtype=torch.int32), -1).to(torch.int32)
    q4, k4 = q.view(B, T1, H, K), k.view(B, T1, H, K)
    v4, g3, b3 = v.view(B, T1, HV, V), g.view(B, T1, HV), beta.view(B, T1, HV)
    o = torch.empty(B, T1, HV, V, dtype=v.dtype)
    for t in range(T1):
        o[:, t] = fused_recurrent_gated_delta_rule(q4[:, t].contiguous(), k4[:, t].contiguous(),
                                                   v4[:, t].contiguous(), g3[:, t].contiguous(),
                                                   b3[:, t].contiguous(), scale, state, idx, use_qk_l2norm)
    k_rec = l2norm(k4.float()) if use_qk_l2norm else k4.float()
    rec = torch.cat([k_rec.reshape(B, T1, HK), v4.float().reshape(B, T1, HV * V), g3.float(), b3.float()], -1)
    spec_cache[slots[live]] = rec[live]
    return o.view(B * T1, HV, V)


@gated_delta_rule_verify.register_fake
def _(q, k, v, g, beta, scale, ssm_states, spec_cache, state_indices, num_replay, use_qk_l2norm):
    return v.new_empty(v.shape)
