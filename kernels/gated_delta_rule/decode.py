"""gdn_decode on CPU: the C++ kernel of csrc/gdn_decode_cpu.cpp where it is built, else composed of the base ops."""
import torch

from .. import cpu_ext

ops = torch.ops.qwen3next


def gdn_decode_cpu(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log, dt_bias, norm_weight, norm_eps,
                   scale, ssm_states, state_indices, use_qk_l2norm):
    if cpu_ext.available() and _decode_ext_fits(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, ssm_states):
        return torch.ops.qwen3next_cpu.gdn_decode(mixed_qkv, z, a, b, conv_weight, conv_bias, conv_states, A_log,
                                                  dt_bias, norm_weight, norm_eps, scale, ssm_states, state_indices,
                                                  use_qk_l2norm)
    B = mixed_qkv.shape[0]
    HV, K, V = ssm_states.shape[1:]
    H = (mixed_qkv.shape[1] - HV * V) // (2 * K)
    x = ops.causal_conv1d_update(mixed_qkv, conv_weight, conv_bias, conv_states, state_indices, True)  # [B, D]
    q = x[:, :H * K].reshape(B, H, K)
    k = x[:, H * K:2 * H * K].reshape(B, H, K)
    v = x[:, 2 * H * K:].reshape(B, HV, V)
    g, beta = ops.gdn_gating(A_log, a, b, dt_bias)
    o = ops.fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm)
    return ops.gated_rms_norm(o, z, norm_weight, norm_eps)


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
