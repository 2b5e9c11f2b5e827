"""Causal depthwise conv on CPU: vectorised over tokens and channels, a loop over the W taps. The decode update runs
the C++ kernel (csrc/gdn_decode_cpu.cpp) where it is built."""
import torch
import torch.nn.functional as F

from .. import cpu_ext
from ..utils.cpu import sequences_by_length

BLOCK_T = 64  # tokens per block: keeps the fp32 scratch in cache


def _check_conv_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_states: torch.Tensor,
                     state_indices: torch.Tensor) -> None:
    D, W = weight.shape
    assert x.dim() == 2 and x.shape[1] == D and x.stride(1) == 1, f"x must be [*, {D}] with unit channel stride"
    assert bias is None or bias.shape == (D,)
    assert conv_states.dim() == 3 and conv_states.shape[2] == D and conv_states.shape[1] >= W - 1, \
        f"conv_states must be [S, L >= {W - 1}, {D}], got {tuple(conv_states.shape)}"
    assert state_indices.dtype == torch.int32


def _depthwise_conv(xx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    activation_silu: bool) -> torch.Tensor:
    """xx: [..., W - 1 + n, D] fp32 (window history then n new rows), weight: [W, D] fp32 -> [..., n, D] fp32."""
    W = weight.shape[0]
    n = xx.shape[-2] - (W - 1)
    y = xx[..., W - 1:, :] * weight[W - 1]
    for w in range(W - 1):
        y.addcmul_(xx[..., w:w + n, :], weight[w])
    if bias is not None:
        y += bias
    return F.silu(y, inplace=True) if activation_silu else y


def causal_conv1d_fwd_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          conv_states: torch.Tensor, cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                          has_initial_state: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    _check_conv_args(x, weight, bias, conv_states, state_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    N = state_indices.shape[0]
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.shape == (N + 1,)
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    cu = cu_seqlens.tolist()
    assert cu[0] == 0 and cu[-1] == T, f"cu_seqlens must span the T = {T} tokens, got {cu[0]}..{cu[-1]}"

    weight = weight.float().T  # [W, D]
    bias = bias.float() if bias is not None else None
    out = torch.empty(T, D, dtype=x.dtype)
    for bos, eos, slot, init in zip(cu[:-1], cu[1:], state_indices.tolist(), has_initial_state.tolist()):
        if slot < 0:
            out[bos:eos] = 0
            continue
        state = conv_states[slot].float() if init else torch.zeros(L, D)  # [L, D]
        history = state[L - (W - 1):]  # [W - 1, D]
        for t0 in range(bos, eos, BLOCK_T):
            t1 = min(t0 + BLOCK_T, eos)
            xx = torch.cat([history, x[t0:t1].float()])  # [W - 1 + n, D]
            out[t0:t1] = _depthwise_conv(xx, weight, bias, activation_silu)
            history = xx[xx.shape[0] - (W - 1):]
        conv_states[slot] = torch.cat([state, x[max(bos, eos - L):eos].float()])[-L:]
    return out


def causal_conv1d_update_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             conv_states: torch.Tensor, state_indices: torch.Tensor,
                             activation_silu: bool) -> torch.Tensor:
    _check_conv_args(x, weight, bias, conv_states, state_indices)
    B, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    assert state_indices.shape == (B,)
    if cpu_ext.available() and _ext_fits(x, weight, bias, conv_states):
        return torch.ops.qwen3next_cpu.causal_conv1d_update(x, weight, bias, conv_states, state_indices,
                                                            activation_silu)

    out = torch.zeros(B, D, dtype=x.dtype)
    rows = (state_indices >= 0).nonzero().squeeze(1)  # padded entries (slot -1) are skipped
    slots = state_indices[rows].long()
    state = conv_states.index_select(0, slots).float()  # [B', L, D]
    xx = torch.cat([state, x[rows, None].float()], 1)  # [B', L + 1, D]
    y = (xx[:, L - (W - 1):] * weight.float().T).sum(1)  # [B', D]
    if bias is not None:
        y += bias.float()
    out[rows] = (F.silu(y) if activation_silu else y).to(x.dtype)
    conv_states.index_copy_(0, slots, xx[:, 1:].to(conv_states.dtype))
    return out


def _ext_fits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_states: torch.Tensor) -> bool:
    """The C++ update takes fp32 or bf16 tensors, a contiguous weight and a bias of the weight's dtype."""
    fits = (torch.float32, torch.bfloat16)
    return (x.dtype in fits and weight.dtype in fits and conv_states.dtype in fits and weight.is_contiguous()
            and (bias is None or (bias.dtype == weight.dtype and bias.is_contiguous())))


def causal_conv1d_verify_cpu(x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted,
                             activation_silu):
    """Vectorised over the sequences of each length (a verification batch usually has one: k + 1)."""
    _check_conv_args(x, weight, bias, conv_states, state_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    cu = cu_seqlens.tolist()
    assert cu[0] == 0 and cu[-1] == T, f"cu_seqlens must span the T = {T} tokens"
    weight = weight.float().T  # [W, D]
    bias = bias.float() if bias is not None else None
    out = torch.zeros(T, D, dtype=x.dtype)
    slots, accepted = state_indices.long(), num_accepted.long()
    for Q, (seqs, tokens) in sequences_by_length(cu, state_indices).items():
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
