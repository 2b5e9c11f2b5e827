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

from ..varlen import sequences_by_length
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
    """Vectorised over the sequences of each length (a verification batch usually has one: k + 1)."""
    _check_conv_args(x, weight, bias, conv_states, cache_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    cu = query_start_loc.tolist()
    assert cu[0] == 0 and cu[-1] == T, f"query_start_loc must span the T = {T} tokens"
    weight = weight.float().T  # [W, D]
    bias = bias.float() if bias is not None else None
    out = torch.zeros(T, D, dtype=x.dtype)
    slots, accepted = cache_indices.long(), num_accepted.long()
    for Q, (seqs, tokens) in sequences_by_length(cu, cache_indices).items():
        a = accepted[seqs]  # [N']
        assert bool((a >= 1).all()) and int(a.max()) <= Q <= L and int(a.max()) - 1 + W - 1 <= L, \
            "need 1 <= num_accepted <= tokens of the sequence <= L and the window inside the state"
        xs = x[tokens].float()  # [N', Q, D]
        old = conv_states[slots[seqs]].float()  # [N', L, D]
        window = _rows(old, a - 1, W - 1)
        y = _depthwise_conv(torch.cat([window, xs], 1), weight, bias, activation_silu)  # [N', Q, D]
        out[tokens] = y.to(x.dtype)
        kept = _rows(old, a, L - Q)
        conv_states[slots[seqs]] = torch.cat([kept, xs], 1).to(conv_states.dtype)
    return out


def _rows(states: torch.Tensor, start: torch.Tensor, n: int) -> torch.Tensor:
    """states [N', L, D], start [N'] -> states[i, start[i] : start[i] + n] for each i, as [N', n, D]."""
    index = start[:, None] + torch.arange(n)
    return states.gather(1, index[..., None].expand(-1, -1, states.shape[2]))


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
