"""Causal depthwise conv in Triton: varlen prefill and the single-token update, states in place by slot.

T = total tokens, B = sequences of a decode batch, N = sequences, S = state slots,
D = conv channels, W = conv width, L = conv state length (>= W - 1). Index tensors are int32; slot -1 is padding.
"""
import torch
import triton
import triton.language as tl

from .ops import causal_conv1d_fwd, causal_conv1d_update


@triton.jit
def seq_chunk_of_program(cu_seqlens, N, i_p, BT: tl.constexpr, BN: tl.constexpr):
    """Maps program i_p onto (sequence, chunk of BT tokens) without a host sync: chunk counts are summed in-kernel.

    Returns (i_n, bos, eos, i_c, valid); valid is False for the surplus programs of the cdiv(T, BT) + N grid.
    """
    o_n = tl.arange(0, BN)
    m_n = o_n < N
    b_bos = tl.load(cu_seqlens + o_n, mask=m_n, other=0)
    b_eos = tl.load(cu_seqlens + o_n + 1, mask=m_n, other=0)
    b_nc = tl.where(m_n, (b_eos - b_bos + BT - 1) // BT, 0)  # [BN]
    b_cum = tl.cumsum(b_nc, 0)  # inclusive
    i_n = tl.sum((b_cum <= i_p).to(tl.int32), 0)
    valid = i_n < N
    i_n = tl.minimum(i_n, N - 1)
    i_c = i_p - tl.sum(tl.where(o_n == i_n, b_cum - b_nc, 0), 0)
    bos = tl.load(cu_seqlens + i_n)
    eos = tl.load(cu_seqlens + i_n + 1)
    return i_n, bos, eos, i_c, valid


def seq_block(N: int) -> int:
    """Power-of-two width of the in-kernel sequence table, in few buckets so that batch sizes share a compile."""
    return next(b for b in (16, 128, 1024, triton.next_power_of_2(N)) if N <= b)


@triton.jit(do_not_specialize=["N"])
def causal_conv1d_fwd_kernel(
    x, weight, bias, conv_states, cu_seqlens, cache_indices, has_initial_state, out,
    N, D, stride_x_t, stride_s_n, stride_s_l,
    W: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    i_p, i_d = tl.program_id(0), tl.program_id(1)
    i_n, bos, eos, i_c, valid = seq_chunk_of_program(cu_seqlens, N, i_p, BT, BN)
    if not valid:
        return
    o_t = bos + i_c * BT + tl.arange(0, BT)  # [BT]
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_t = o_t < eos
    m_d = o_d < D
    slot = tl.load(cache_indices + i_n).to(tl.int64)
    p_out = out + o_t[:, None] * D + o_d[None, :]
    if slot < 0:
        tl.store(p_out, tl.zeros([BT, BD], dtype=out.dtype.element_ty), mask=m_t[:, None] & m_d[None, :])
        return
    # tokens in [state_lo, bos) come from the old state rows (none without an initial state)
    state_lo = bos - L * tl.load(has_initial_state + i_n).to(tl.int32)
    p_state = conv_states + slot * stride_s_n

    b_y = tl.zeros([BT, BD], dtype=tl.float32)
    for w in tl.static_range(W):
        o_src = o_t - (W - 1) + w  # token each output row reads through tap w
        m_x = (o_src >= bos) & m_t
        b_x = tl.load(x + o_src[:, None] * stride_x_t + o_d[None, :], mask=m_x[:, None] & m_d[None, :], other=0)
        m_s = (o_src < bos) & (o_src >= state_lo) & m_t
        b_s = tl.load(p_state + (L - bos + o_src)[:, None] * stride_s_l + o_d[None, :],
                      mask=m_s[:, None] & m_d[None, :], other=0)
        b_w = tl.load(weight + o_d * W + w, mask=m_d, other=0).to(tl.float32)
        b_y += (b_x.to(tl.float32) + b_s.to(tl.float32)) * b_w[None, :]
    if HAS_BIAS:
        b_y += tl.load(bias + o_d, mask=m_d, other=0).to(tl.float32)[None, :]
    if ACTIVATION_SILU:
        b_y = b_y * tl.sigmoid(b_y)
    tl.store(p_out, b_y.to(out.dtype.element_ty), mask=m_t[:, None] & m_d[None, :])

    if i_c == 0:
        # The first chunk is the only reader of the old state, so it alone writes the new one.
        o_l = tl.arange(0, BL)
        o_row = eos - L + o_l  # [BL], new state row r holds token eos - L + r
        m_l = o_l < L
        m_nx = (o_row >= bos) & m_l
        b_new = tl.load(x + o_row[:, None] * stride_x_t + o_d[None, :], mask=m_nx[:, None] & m_d[None, :], other=0)
        m_ns = (o_row < bos) & (o_row >= state_lo) & m_l
        b_old = tl.load(p_state + (L - bos + o_row)[:, None] * stride_s_l + o_d[None, :],
                        mask=m_ns[:, None] & m_d[None, :], other=0)
        b_new = b_new.to(tl.float32) + b_old.to(tl.float32)
        tl.debug_barrier()
        tl.store(p_state + o_l[:, None] * stride_s_l + o_d[None, :], b_new.to(conv_states.dtype.element_ty),
                 mask=m_l[:, None] & m_d[None, :])


@triton.jit
def causal_conv1d_update_kernel(
    x, weight, bias, conv_states, cache_indices, out,
    D, stride_x_b, stride_s_n, stride_s_l,
    W: tl.constexpr, L: tl.constexpr, BW: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    slot = tl.load(cache_indices + i_b).to(tl.int64)
    if slot < 0:
        tl.store(out + i_b * D + o_d, tl.zeros([BD], dtype=out.dtype.element_ty), mask=m_d)
        return
    p_state = conv_states + slot * stride_s_n
    b_x = tl.load(x + i_b * stride_x_b + o_d, mask=m_d, other=0).to(tl.float32)
    # window row w: old state row L - (W - 1) + w, and the new input at w = W - 1
    o_w = tl.arange(0, BW)
    m_w = (o_w < W - 1)[:, None] & m_d[None, :]
    b_win = tl.load(p_state + (L - (W - 1) + o_w)[:, None] * stride_s_l + o_d[None, :], mask=m_w, other=0)
    b_win = tl.where((o_w == W - 1)[:, None], b_x[None, :], b_win.to(tl.float32))
    b_w = tl.load(weight + o_d[None, :] * W + o_w[:, None], mask=(o_w < W)[:, None] & m_d[None, :], other=0)
    b_y = tl.sum(b_win * b_w.to(tl.float32), 0)  # [BD]
    # new state row r: old row r + 1, and the new input at r = L - 1
    o_l = tl.arange(0, BL)
    m_l = o_l < L
    b_shift = tl.load(p_state + (o_l + 1)[:, None] * stride_s_l + o_d[None, :],
                      mask=(o_l + 1 < L)[:, None] & m_d[None, :], other=0)
    b_shift = tl.where((o_l == L - 1)[:, None], b_x[None, :], b_shift.to(tl.float32))
    if HAS_BIAS:
        b_y += tl.load(bias + o_d, mask=m_d, other=0).to(tl.float32)
    if ACTIVATION_SILU:
        b_y = b_y * tl.sigmoid(b_y)
    tl.store(out + i_b * D + o_d, b_y.to(out.dtype.element_ty), mask=m_d)
    tl.debug_barrier()
    tl.store(p_state + o_l[:, None] * stride_s_l + o_d[None, :], b_shift.to(conv_states.dtype.element_ty),
             mask=m_l[:, None] & m_d[None, :])


def _check_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_states: torch.Tensor,
                cache_indices: torch.Tensor) -> None:
    D, W = weight.shape
    assert x.dim() == 2 and x.shape[1] == D and x.stride(1) == 1, f"x must be [*, {D}] with unit channel stride"
    assert weight.is_contiguous(), "weight must be a contiguous [D, W]"
    assert bias is None or (bias.shape == (D,) and bias.is_contiguous())
    assert conv_states.dim() == 3 and conv_states.shape[2] == D and conv_states.shape[1] >= W - 1, \
        f"conv_states must be [S, L >= {W - 1}, {D}], got {tuple(conv_states.shape)}"
    assert conv_states.stride(2) == 1, "conv_states must have unit channel stride"
    assert cache_indices.dtype == torch.int32 and cache_indices.is_contiguous()
    devices = {t.device for t in (x, weight, conv_states, cache_indices)}
    assert len(devices) == 1, f"all tensors must be on one device, got {devices}"


def causal_conv1d_fwd_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             conv_states: torch.Tensor, query_start_loc: torch.Tensor, cache_indices: torch.Tensor,
                             has_initial_state: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    """Triton causal_conv1d_fwd; same contract as the CPU op (see ops.py). x: [T, D] -> out: [T, D]."""
    _check_conv(x, weight, bias, conv_states, cache_indices)
    T, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    N = cache_indices.shape[0]
    assert query_start_loc.dtype == torch.int32 and query_start_loc.shape == (N + 1,)
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    out = torch.empty(T, D, dtype=x.dtype, device=x.device)
    if T == 0 or N == 0:
        return out
    BT, BD = 64, 128
    BN = seq_block(N)
    grid = (triton.cdiv(T, BT) + N, triton.cdiv(D, BD))
    causal_conv1d_fwd_kernel[grid](
        x, weight, bias, conv_states, query_start_loc, cache_indices, has_initial_state.view(torch.uint8), out,
        N, D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BL=triton.next_power_of_2(L), BT=BT, BD=BD, BN=BN,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=4,
    )
    return out


def causal_conv1d_update_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                conv_states: torch.Tensor, cache_indices: torch.Tensor,
                                activation_silu: bool) -> torch.Tensor:
    """Triton causal_conv1d_update; same contract as the CPU op. x: [B, D] -> out: [B, D]."""
    _check_conv(x, weight, bias, conv_states, cache_indices)
    B, D = x.shape
    W = weight.shape[1]
    L = conv_states.shape[1]
    assert cache_indices.shape == (B,)
    out = torch.empty(B, D, dtype=x.dtype, device=x.device)
    if B == 0:
        return out
    BD = 256
    causal_conv1d_update_kernel[(B, triton.cdiv(D, BD))](
        x, weight, bias, conv_states, cache_indices, out,
        D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BW=triton.next_power_of_2(W), BL=triton.next_power_of_2(L), BD=BD,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=4,
    )
    return out


causal_conv1d_fwd.register_kernel("cuda")(causal_conv1d_fwd_triton)
causal_conv1d_update.register_kernel("cuda")(causal_conv1d_update_triton)
