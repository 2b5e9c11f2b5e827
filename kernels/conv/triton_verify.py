"""Causal conv for speculative verification in Triton: Q tokens per sequence against vLLM's rolling conv state.

T = total tokens, N = sequences, S = state slots, D = conv channels, W = conv width,
L = conv state length (W - 1 + k for k speculative tokens), Q = tokens of one sequence (Q <= L).
Index tensors are int32; slot -1 is padding (outputs zeros, the state is not touched).

The layout (see verify.py): with a = num_accepted[n], the W - 1 inputs before the sequence's first token are state
rows [a - 1, a + W - 2); afterwards the state is concat(old[a : a + L - Q], x_seq). One program per (sequence,
block of BD channels) owns those channels of the slot, so it reads the old rows, then overwrites them.
"""
import torch
import triton
import triton.language as tl

from .triton_conv import _check_conv
from .verify import causal_conv1d_verify


@triton.jit
def causal_conv1d_verify_kernel(
    x, weight, bias, conv_states, cu_seqlens, cache_indices, num_accepted, out,
    D, stride_x_t, stride_s_n, stride_s_l,
    W: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    i_n, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    Q = eos - bos
    slot = tl.load(cache_indices + i_n).to(tl.int64)
    if slot < 0:
        for t0 in range(0, Q, BT):
            o_t = t0 + tl.arange(0, BT)
            tl.store(out + (bos + o_t)[:, None] * D + o_d[None, :], tl.zeros([BT, BD], dtype=out.dtype.element_ty),
                     mask=(o_t < Q)[:, None] & m_d[None, :])
        return
    if Q == 0:  # nothing to verify: the state stays as it is
        return
    a = tl.load(num_accepted + i_n).to(tl.int64)
    p_state = conv_states + slot * stride_s_n
    b_bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(bias + o_d, mask=m_d, other=0).to(tl.float32)

    # Window position j of token t is t + w (tap w): j < W - 1 is old state row a - 1 + j, else token j - (W - 1).
    # Rows outside [0, L) (only for a outside the contract's 1 <= a <= L - W + 2) read as zeros.
    for t0 in range(0, Q, BT):
        o_t = t0 + tl.arange(0, BT)  # [BT], tokens of the sequence
        m_t = o_t < Q
        b_y = tl.zeros([BT, BD], dtype=tl.float32)
        for w in tl.static_range(W):
            o_j = o_t + w
            m_x = (o_j >= W - 1) & m_t
            b_x = tl.load(x + (bos + o_j - (W - 1))[:, None] * stride_x_t + o_d[None, :],
                          mask=m_x[:, None] & m_d[None, :], other=0)
            o_r = a - 1 + o_j  # old state row
            m_s = (o_j < W - 1) & (o_r >= 0) & (o_r < L) & m_t
            b_s = tl.load(p_state + o_r[:, None] * stride_s_l + o_d[None, :], mask=m_s[:, None] & m_d[None, :],
                          other=0)
            b_w = tl.load(weight + o_d * W + w, mask=m_d, other=0).to(tl.float32)
            b_y += (b_x.to(tl.float32) + b_s.to(tl.float32)) * b_w[None, :]
        b_y += b_bias[None, :]
        if ACTIVATION_SILU:
            b_y = b_y * tl.sigmoid(b_y)
        tl.store(out + (bos + o_t)[:, None] * D + o_d[None, :], b_y.to(out.dtype.element_ty),
                 mask=m_t[:, None] & m_d[None, :])

    # New state row r: old row a + r for r < L - Q, else token r - (L - Q) of the sequence.
    o_l = tl.arange(0, BL)
    m_l = o_l < L
    o_src = o_l - (L - Q)
    m_nx = (o_src >= 0) & m_l
    b_new = tl.load(x + (bos + o_src)[:, None] * stride_x_t + o_d[None, :], mask=m_nx[:, None] & m_d[None, :],
                    other=0)
    o_r = a + o_l
    m_ns = (o_src < 0) & (o_r >= 0) & (o_r < L) & m_l
    b_old = tl.load(p_state + o_r[:, None] * stride_s_l + o_d[None, :], mask=m_ns[:, None] & m_d[None, :], other=0)
    b_new = tl.where(m_nx[:, None], b_new.to(conv_states.dtype.element_ty), b_old.to(conv_states.dtype.element_ty))
    tl.debug_barrier()  # every thread has read the old rows before any is overwritten
    tl.store(p_state + o_l[:, None] * stride_s_l + o_d[None, :], b_new, mask=m_l[:, None] & m_d[None, :])


def causal_conv1d_verify_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                conv_states: torch.Tensor, query_start_loc: torch.Tensor, cache_indices: torch.Tensor,
                                num_accepted: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    """Triton causal_conv1d_verify; same contract as the CPU op (see verify.py).

    x: [T, D] (row-strided views allowed), weight: [D, W], bias: [D] or None, conv_states: [S, L, D] (mutated),
    query_start_loc: [N+1] int32, cache_indices: [N] int32 (-1: skip), num_accepted: [N] int32. Returns out: [T, D]
    in x.dtype. No host synchronisation: the contract (1 <= a, a + W - 2 < L, Q <= L, a <= Q) is not checked.
    """
    _check_conv(x, weight, bias, conv_states, cache_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    N = cache_indices.shape[0]
    assert query_start_loc.dtype == torch.int32 and query_start_loc.shape == (N + 1,)
    assert query_start_loc.is_contiguous()
    assert num_accepted.dtype == torch.int32 and num_accepted.shape == (N,) and num_accepted.is_contiguous()
    assert query_start_loc.device == num_accepted.device == x.device
    out = torch.empty(T, D, dtype=x.dtype, device=x.device)
    if T == 0 or N == 0:
        return out
    BD = 128
    causal_conv1d_verify_kernel[(N, triton.cdiv(D, BD))](
        x, weight, bias, conv_states, query_start_loc, cache_indices, num_accepted, out,
        D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BL=triton.next_power_of_2(L), BT=min(triton.next_power_of_2(L), 16), BD=BD,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=4,
    )
    return out


causal_conv1d_verify.register_kernel("cuda")(causal_conv1d_verify_triton)
