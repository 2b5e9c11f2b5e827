"""Reference causal depthwise conv: token by token, fp32. This file is the specification."""
import torch
import torch.nn.functional as F


def _conv_step(state: torch.Tensor, x_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               activation_silu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: returns (out_t [D], new state [L, D]); all fp32."""
    W = weight.shape[1]
    L = state.shape[0]
    window = torch.cat([state[L - (W - 1):], x_t[None]])  # [W, D], oldest first
    y = (window * weight.T).sum(0)
    if bias is not None:
        y = y + bias
    if activation_silu:
        y = F.silu(y)
    return y, torch.cat([state, x_t[None]])[1:]


def naive_causal_conv1d_fwd(x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state,
                            activation_silu):
    """x: [T, D], weight: [D, W], bias: [D] | None, conv_states: [S, L, D] (mutated),
    cu_seqlens: [N+1], state_indices: [N], has_initial_state: [N]. Returns out: [T, D] fp32."""
    T, D = x.shape
    L = conv_states.shape[1]
    weight = weight.float()
    bias = bias.float() if bias is not None else None
    out = torch.zeros(T, D)
    for n in range(len(state_indices)):
        slot = int(state_indices[n])
        if slot < 0:
            continue
        state = conv_states[slot].float() if bool(has_initial_state[n]) else torch.zeros(L, D)
        for t in range(int(cu_seqlens[n]), int(cu_seqlens[n + 1])):
            out[t], state = _conv_step(state, x[t].float(), weight, bias, activation_silu)
        conv_states[slot] = state.to(conv_states.dtype)
    return out


def naive_causal_conv1d_update(x, weight, bias, conv_states, state_indices, activation_silu):
    """x: [B, D], conv_states: [S, L, D] (mutated), state_indices: [B]. Returns out: [B, D] fp32."""
    B, D = x.shape
    weight = weight.float()
    bias = bias.float() if bias is not None else None
    out = torch.zeros(B, D)
    for b in range(B):
        slot = int(state_indices[b])
        if slot < 0:
            continue
        out[b], state = _conv_step(conv_states[slot].float(), x[b].float(), weight, bias, activation_silu)
        conv_states[slot] = state.to(conv_states.dtype)
    return out


def naive_causal_conv1d_verify(x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted,
                               activation_silu):
    """Token by token, fp32. Returns out [T, D] fp32; mutates conv_states."""
    W = weight.shape[1]
    L = conv_states.shape[1]
    out = torch.zeros(x.shape)
    for n, slot in enumerate(state_indices.tolist()):
        if slot < 0:
            continue
        bos, eos = int(cu_seqlens[n]), int(cu_seqlens[n + 1])
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
