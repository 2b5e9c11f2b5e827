"""Op registration: torch.ops.qwen3next.causal_conv1d_fwd and torch.ops.qwen3next.causal_conv1d_update.

T = total tokens, B = sequences of a decode batch, N = sequences, S = state slots,
D = conv channels, W = conv width, L = conv state length (>= W - 1). Index tensors are int32; slot -1 is padding.
"""
import torch

from .cpu import causal_conv1d_fwd_cpu, causal_conv1d_update_cpu


@torch.library.custom_op("qwen3next::causal_conv1d_fwd", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_states: torch.Tensor,
                      query_start_loc: torch.Tensor, cache_indices: torch.Tensor, has_initial_state: torch.Tensor,
                      activation_silu: bool) -> torch.Tensor:
    """Depthwise causal conv over a varlen batch (prefill), continuing each sequence's conv state.

    Args:
        x: [T, D], sequences concatenated; may be a row-strided view (x.stride(1) == 1).
        weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated. Rows are pre-activation inputs, oldest first, newest at row L - 1.
        query_start_loc: [N+1] int32. cache_indices: [N] int32 (-1: skip the sequence, outputs zeros).
        has_initial_state: [N] bool; False starts the sequence from zeros (the slot is not read).
        activation_silu: apply SiLU after the bias.

    Returns:
        out: [T, D] in x.dtype: out[t, d] = sum_w weight[d, w] * xx[t + w, d] (+ bias), where xx is the last W - 1
        state rows (or zeros) followed by the sequence. Afterwards conv_states[slot] holds the last L rows of
        concat(old state or zeros, x_seq). Math in fp32; conv_states keeps its dtype.
    """
    return causal_conv1d_fwd_cpu(x, weight, bias, conv_states, query_start_loc, cache_indices, has_initial_state,
                                 activation_silu)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, conv_states, query_start_loc, cache_indices, has_initial_state, activation_silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("qwen3next::causal_conv1d_update", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_update(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         conv_states: torch.Tensor, cache_indices: torch.Tensor,
                         activation_silu: bool) -> torch.Tensor:
    """One new token per sequence (decode).

    Args:
        x: [B, D]. weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated: shifts left by one row and x[b] becomes row L - 1.
        cache_indices: [B] int32 (-1: skip, output zeros).
        activation_silu: apply SiLU after the bias.

    Returns:
        out: [B, D] in x.dtype, the conv of concat(conv_states[slot, L - (W - 1):], x[b]).
    """
    return causal_conv1d_update_cpu(x, weight, bias, conv_states, cache_indices, activation_silu)


@causal_conv1d_update.register_fake
def _(x, weight, bias, conv_states, cache_indices, activation_silu):
    return x.new_empty(x.shape)
