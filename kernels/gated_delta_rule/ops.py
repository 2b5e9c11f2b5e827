"""torch.ops.qwen3next.chunk_gated_delta_rule / fused_recurrent_gated_delta_rule / recurrent_gated_delta_rule_verify
/ gdn_decode: schemas, fakes, the CPU implementation registered with each op, and the CUDA backends (registered by
qwen3next_kernels.backends)."""
import torch

from .chunk import chunk_gated_delta_rule_cpu
from .decode import gdn_decode_cpu
from .fused_recurrent import fused_recurrent_gated_delta_rule_cpu
from .verify import recurrent_gated_delta_rule_verify_cpu

_HERE = "qwen3next_kernels.gated_delta_rule"
# op -> {backend: "module:function"}, in order of preference on CUDA (kernels/benchmarks/RESULTS_H200.md).
CUDA_BACKENDS = {
    "chunk_gated_delta_rule": {
        "flashinfer": f"{_HERE}.library_chunk:chunk_gated_delta_rule_flashinfer",
        "fla": f"{_HERE}.library_chunk:chunk_gated_delta_rule_fla",
        "triton": f"{_HERE}.triton_chunk:chunk_gated_delta_rule_triton",
    },
    "fused_recurrent_gated_delta_rule": {
        "triton": f"{_HERE}.triton_fused_recurrent:fused_recurrent_gated_delta_rule_triton",
    },
    "recurrent_gated_delta_rule_verify": {
        "triton": f"{_HERE}.triton_verify:recurrent_gated_delta_rule_verify_triton",
    },
    "gdn_decode": {"triton": f"{_HERE}.triton_decode:gdn_decode_triton"},
}


@torch.library.custom_op("qwen3next::chunk_gated_delta_rule", mutates_args=("ssm_states",), device_types="cpu")
def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           scale: float, ssm_states: torch.Tensor, cu_seqlens: torch.Tensor,
                           state_indices: torch.Tensor, has_initial_state: torch.Tensor,
                           use_qk_l2norm: bool) -> torch.Tensor:
    """Gated delta rule over a varlen batch (prefill), continuing each sequence's recurrent state.

    Per sequence and value head, with the state h: [K, V] and q_t, k_t read from key head hv // (HV // H):
        q_t, k_t <- l2norm (x * rsqrt(sum(x^2) + 1e-6)) if use_qk_l2norm;  q_t <- q_t * scale
        h <- exp(g_t) h;  h <- h + k_t (beta_t (v_t - h^T k_t))^T;  o_t = h^T q_t

    Args:
        q, k: [T, H, K]. v: [T, HV, V]. g: [T, HV] fp32 (log decay, <= 0). beta: [T, HV] fp32.
        scale: multiplies q after the l2norm.
        ssm_states: [S, HV, K, V] fp32 or bf16, mutated: read (as fp32) when has_initial_state, else the state
            starts at zero; the final state is written back in the cache dtype.
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


@torch.library.custom_op("qwen3next::recurrent_gated_delta_rule_verify", mutates_args=("ssm_states",),
                         device_types="cpu")
def recurrent_gated_delta_rule_verify(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                      beta: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                                      cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                                      num_accepted: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
    """Recurrence over Q tokens per sequence, keeping the state after every token (speculative verification).

    vLLM's scheme: sequence n starts from the state in slot state_indices[n, a - 1] (a = num_accepted[n], the
    tokens accepted at the last step) and writes its state after token i to slot state_indices[n, i], so that the
    next step can start from whichever token gets accepted. C >= Q state slots per row (1 + k for k drafts).

    Args:
        q, k: [T, H, K]. v: [T, HV, V]. g, beta: [T, HV] fp32.
        ssm_states: [S, HV, K, V], mutated. cu_seqlens: [N+1] int32.
        state_indices: [N, C] int32 (row n: the slots of sequence n; -1 in column 0 skips it).
        num_accepted: [N] int32 (>= 1): the state to start from is state_indices[n, num_accepted[n] - 1].
    Returns:
        o: [T, HV, V] in v.dtype.
    """
    return recurrent_gated_delta_rule_verify_cpu(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                                 num_accepted, use_qk_l2norm)


@recurrent_gated_delta_rule_verify.register_fake
def _(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices, num_accepted, use_qk_l2norm):
    return v.new_empty(v.shape)


@torch.library.custom_op("qwen3next::gdn_decode", mutates_args=("conv_states", "ssm_states"), device_types="cpu")
def gdn_decode(mixed_qkv: torch.Tensor, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, conv_weight: torch.Tensor,
               conv_bias: torch.Tensor | None, conv_states: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
               norm_weight: torch.Tensor, norm_eps: float, scale: float, ssm_states: torch.Tensor,
               state_indices: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
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
    return gdn_decode_cpu(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight,
                          norm_eps, scale, ssm_states, state_indices, use_qk_l2norm)


@gdn_decode.register_fake
def _(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, norm_eps, scale,
      ssm_states, state_indices, use_qk_l2norm):
    HV, K, V = ssm_states.shape[1:]
    return mixed_qkv.new_empty(mixed_qkv.shape[0], HV, V)
