"""Causal depthwise conv in Triton: varlen prefill and the single-token update, states in place by slot."""
import torch
import triton
import triton.language as tl

from ..utils.triton import seq_block, seq_chunk_of_program


@triton.jit(do_not_specialize=["N"])
def causal_conv1d_fwd_kernel(
    x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state, out,
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
    slot = tl.load(state_indices + i_n).to(tl.int64)
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
    x, weight, bias, conv_states, state_indices, out,
    D, stride_x_b, stride_s_n, stride_s_l,
    W: tl.constexpr, L: tl.constexpr, BW: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    slot = tl.load(state_indices + i_b).to(tl.int64)
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
                state_indices: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> tuple[int, int, int, int, int]:
    """Checks a launch's tensors (cu_seqlens too for the varlen ops); returns (T, D, W, L, N)."""
    D, W = weight.shape
    assert x.dim() == 2 and x.shape[1] == D and x.stride(1) == 1, f"x must be [*, {D}] with unit channel stride"
    assert weight.is_contiguous(), "weight must be a contiguous [D, W]"
    assert bias is None or (bias.shape == (D,) and bias.is_contiguous())
    assert conv_states.dim() == 3 and conv_states.shape[2] == D and conv_states.shape[1] >= W - 1, \
        f"conv_states must be [S, L >= {W - 1}, {D}], got {tuple(conv_states.shape)}"
    assert conv_states.stride(2) == 1, "conv_states must have unit channel stride"
    assert state_indices.dtype == torch.int32 and state_indices.is_contiguous()
    devices = {t.device for t in (x, weight, conv_states, state_indices)}
    assert len(devices) == 1, f"all tensors must be on one device, got {devices}"
    N = state_indices.shape[0]
    if cu_seqlens is not None:
        assert cu_seqlens.dtype == torch.int32 and cu_seqlens.shape == (N + 1,) and cu_seqlens.is_contiguous()
        assert cu_seqlens.device == x.device
    return x.shape[0], D, W, conv_states.shape[1], N


def causal_conv1d_fwd_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             conv_states: torch.Tensor, cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                             has_initial_state: torch.Tensor, activation_silu: bool, BT: int = 64, BD: int = 128,
                             num_warps: int = 4) -> torch.Tensor:
    """Triton causal_conv1d_fwd; same contract as the CPU op (see ops.py). x: [T, D] -> out: [T, D]."""
    T, D, W, L, N = _check_conv(x, weight, bias, conv_states, state_indices, cu_seqlens)
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    out = torch.empty(T, D, dtype=x.dtype, device=x.device)
    if T == 0 or N == 0:
        return out
    BN = seq_block(N)
    grid = (triton.cdiv(T, BT) + N, triton.cdiv(D, BD))
    causal_conv1d_fwd_kernel[grid](
        x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state.view(torch.uint8), out,
        N, D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BL=triton.next_power_of_2(L), BT=BT, BD=BD, BN=BN,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=num_warps,
    )
    return out


def causal_conv1d_update_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                conv_states: torch.Tensor, state_indices: torch.Tensor,
                                activation_silu: bool) -> torch.Tensor:
    """Triton causal_conv1d_update; same contract as the CPU op. x: [B, D] -> out: [B, D]."""
    B, D, W, L, _ = _check_conv(x, weight, bias, conv_states, state_indices)
    assert state_indices.shape == (B,)
    out = torch.empty(B, D, dtype=x.dtype, device=x.device)
    if B == 0:
        return out
    BD = 256
    causal_conv1d_update_kernel[(B, triton.cdiv(D, BD))](
        x, weight, bias, conv_states, state_indices, out,
        D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BW=triton.next_power_of_2(W), BL=triton.next_power_of_2(L), BD=BD,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=4,
    )
    return out


@triton.jit
def causal_conv1d_verify_kernel(
    x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted, out,
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
    slot = tl.load(state_indices + i_n).to(tl.int64)
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
                                conv_states: torch.Tensor, cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                                num_accepted: torch.Tensor, activation_silu: bool) -> torch.Tensor:
    """Triton causal_conv1d_verify; same contract as the CPU op (see ops.py).

    x: [T, D] (row-strided views allowed), weight: [D, W], bias: [D] or None, conv_states: [S, L, D] (mutated),
    cu_seqlens: [N+1] int32, state_indices: [N] int32 (-1: skip), num_accepted: [N] int32. Returns out: [T, D]
    in x.dtype. No host synchronisation: the contract (1 <= a, a + W - 2 < L, Q <= L, a <= Q) is not checked.
    """
    T, D, W, L, N = _check_conv(x, weight, bias, conv_states, state_indices, cu_seqlens)
    assert num_accepted.dtype == torch.int32 and num_accepted.shape == (N,) and num_accepted.is_contiguous()
    assert num_accepted.device == x.device
    out = torch.empty(T, D, dtype=x.dtype, device=x.device)
    if T == 0 or N == 0:
        return out
    BD = 128
    causal_conv1d_verify_kernel[(N, triton.cdiv(D, BD))](
        x, weight, bias, conv_states, cu_seqlens, state_indices, num_accepted, out,
        D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BL=triton.next_power_of_2(L), BT=min(triton.next_power_of_2(L), 16), BD=BD,
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=4,
    )
    return out

