"""torch.ops.qwen3next.causal_conv1d_fwd / causal_conv1d_update / causal_conv1d_verify: schemas, fakes, the CPU
implementation registered with each op, and the CUDA backends (registered by qwen3next_kernels.backends)."""
import torch

from .cpu import causal_conv1d_fwd_cpu, causal_conv1d_update_cpu, causal_conv1d_verify_cpu

# op -> {backend: "module:function"}, in order of preference on CUDA (kernels/benchmarks/RESULTS_H200.md).
CUDA_BACKENDS = {
    "causal_conv1d_fwd": {"triton": "qwen3next_kernels.conv.triton:causal_conv1d_fwd_triton"},
    "causal_conv1d_update": {"triton": "qwen3next_kernels.conv.triton:causal_conv1d_update_triton"},
    "causal_conv1d_verify": {"triton": "qwen3next_kernels.conv.triton:causal_conv1d_verify_triton"},
}


@torch.library.custom_op("qwen3next::causal_conv1d_fwd", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_states: torch.Tensor,
                      cu_seqlens: torch.Tensor, state_indices: torch.Tensor, has_initial_state: torch.Tensor,
                      activation_silu: bool) -> torch.Tensor:
    """Depthwise causal conv over a varlen batch (prefill), continuing each sequence's conv state.

    Args:
        x: [T, D], sequences concatenated; may be a row-strided view (x.stride(1) == 1).
        weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated. Rows are pre-activation inputs, oldest first, newest at row L - 1.
        cu_seqlens: [N+1] int32. state_indices: [N] int32 (-1: skip the sequence, outputs zeros).
        has_initial_state: [N] bool; False starts the sequence from zeros (the slot is not read).
        activation_silu: apply SiLU after the bias.

    Returns:
        out: [T, D] in x.dtype: out[t, d] = sum_w weight[d, w] * xx[t + w, d] (+ bias), where xx is the last W - 1
        state rows (or zeros) followed by the sequence. Afterwards conv_states[slot] holds the last L rows of
        concat(old state or zeros, x_seq). Math in fp32; conv_states keeps its dtype.
    """
    return causal_conv1d_fwd_cpu(x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state,
                                 activation_silu)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state, activation_silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("qwen3next::causal_conv1d_update", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_update(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         conv_states: torch.Tensor, state_indices: torch.Tensor,
                         activation_silu: bool) -> torch.Tensor:
    """One new token per sequence (decode).

    Args:
        x: [B, D]. weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated: shifts left by one row and x[b] becomes row L - 1.
        state_indices: [B] int32 (-1: skip, output zeros).
        activation_silu: apply SiLU after the bias.

    Returns:
        out: [B, D] in x.dtype, the conv of concat(conv_states[slot, L - (W - 1):], x[b]).
    """
    return causal_conv1d_update_cpu(x, weight, bias, conv_states, state_indices, activation_silu)


@causal_conv1d_update.register_fake
def _(x, weight, bias, conv_states, state_indices, activation_silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("qwen3next::causal_conv1d_verify", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_verify(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         conv_states: torch.Tensor, cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                         num_accepted: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    """Conv of Q tokens per sequence continuing from the last accepted token (speculative verification).

    vLLM's rolling state (L = W - 1 + k for k speculative tokens): the W - 1 inputs before the sequence's first new
    token are rows [a - 1, a - 1 + W - 1), a = tokens accepted at the last step (a = 1 outside speculative
    decoding: rows [0, W - 1)). Afterwards the state is concat(old[a : a + L - Q], x_seq), so that when the next
    step accepts a' of the Q tokens its window starts at row a' - 1 again, and vLLM's block copies (from row a - 1
    on) stay valid.

    Args:
        x: [T, D]. weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated (the rolling layout above).
        cu_seqlens: [N+1] int32 (Q = cu_seqlens[n+1] - cu_seqlens[n] <= L). state_indices: [N] int32 (-1: skip).
        num_accepted: [N] int32, 1 <= a <= Q.
        activation_silu: apply SiLU after the bias.

    Returns:
        out: [T, D] in x.dtype.
    """
    return causal_conv1d_verify_cpu(x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted,
                                    activation_silu)


@causal_conv1d_verify.register_fake
def _(x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted, activation_silu):
    return x.new_empty(x.shape)
