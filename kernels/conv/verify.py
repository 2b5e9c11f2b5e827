"""Causal conv for speculative verification: several tokens per sequence against a rolling state.

T = total tokens, N = sequences, S = state slots, D = conv channels, W = conv width,
L = conv state length (W - 1 + k for k speculative tokens), Q = tokens of one sequence (Q <= L).

vLLM's layout of the rolling state (``[L, D]`` per slot): the W - 1 inputs that precede the
sequence's first new token are rows ``[a - 1, a - 1 + W - 1)``, a = accepted tokens of the last
step (a = 1 outside speculative decoding: rows ``[0, W - 1)``). After the step the state is
``concat(old[a : a + L - Q], x_seq)``, so that when the next step accepts a' of the Q tokens its
window starts at row a' - 1 again, and vLLM's block copies (from row a - 1 on) stay valid.
"""
import torch

from .cpu import _check_conv_args, _depthwise_conv


def naive_causal_conv1d_verify(x, weight, bias, conv_states, query_start_loc, cache_indices, num_accepted,
                               activation_silu):
    """Token by token, fp32. Returns out [T, D] fp32; mutates conv_states."""
    W = weight.shape[1]
    L = conv_states.shape[1]
    out = torch.zeros(x.shape)
    for n, slot in enumerate(cache_indices.tolist()):
        if slot < 0:
            continue
        bos, eos = int(query_start_loc[n]), int(query_start_loc[n + 1])
        start = int(num_accepted[n]) - 1
        old = conv_states[slot].float()
        window = old[start:start + W - 1]
        for t in range(bos, eos):
            window = torch.cat([window, x[t:t + 1].float()])
            y = (window * weight.float().T).sum(0) + (bias.float() if bias is not None else 0)
            out[t] = torch.nn.functional.silu(y) if activation_silu else y
            window = window[1:]
        conv_states[slot] = torch.cat([old[start + 1:start + 1 + L - (eos - bos)], x[bos:eos].float()])
    return out


def causal_conv1d_verify_cpu(x, weight, bias, conv_states, query_start_loc, cache_indices, num_accepted,
                             activation_silu):
    _check_conv_args(x, weight, bias, conv_states, cache_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    cu = query_start_loc.tolist()
    assert cu[0] == 0 and cu[-1] == T, f"query_start_loc must span the T = {T} tokens"
    weight = weight.float().T  # [W, D]
    bias = bias.float() if bias is not None else None
    out = torch.zeros(T, D, dtype=x.dtype)
    for bos, eos, slot, accepted in zip(cu[:-1], cu[1:], cache_indices.tolist(), num_accepted.tolist()):
        if slot < 0 or eos == bos:
            continue
        assert 1 <= accepted and accepted - 1 + W - 1 <= L and eos - bos <= L
        old = conv_states[slot].float()  # [L, D]
        xx = torch.cat([old[accepted - 1:accepted - 1 + W - 1], x[bos:eos].float()])
        out[bos:eos] = _depthwise_conv(xx, weight, bias, activation_silu)
        conv_states[slot] = torch.cat([old[accepted:accepted + L - (eos - bos)], x[bos:eos].float()])
    return out


@torch.library.custom_op("qwen3next::causal_conv1d_verify", mutates_args=("conv_states",), device_types="cpu")
def causal_conv1d_verify(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         conv_states: torch.Tensor, query_start_loc: torch.Tensor, cache_indices: torch.Tensor,
                         num_accepted: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    """Conv of Q tokens per sequence continuing from the last accepted token (speculative verification).

    Args:
        x: [T, D]. weight: [D, W]. bias: [D] or None.
        conv_states: [S, L, D], mutated (the rolling layout of the module docstring).
        query_start_loc: [N+1] int32. cache_indices: [N] int32 (-1: skip). num_accepted: [N] int32 (>= 1).
    Returns:
        out: [T, D] in x.dtype.
    """
    return causal_conv1d_verify_cpu(x, weight, bias, conv_states, query_start_loc, cache_indices, num_accepted,
                                    activation_silu)


@causal_conv1d_verify.register_fake
def _(x, weight, bias, conv_states, query_start_loc, cache_indices, num_accepted, activation_silu):
    return x.new_empty(x.shape)
