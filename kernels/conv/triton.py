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
        conv_write_final_state(x, p_state, bos, eos, state_lo, stride_x_t, stride_s_l, o_d, m_d, conv_states, L, BL)


@triton.jit
def conv_source_row(x, p_state, o_src, bos, state_lo, stride_x_t, stride_s_l, o_d, m_d, L: tl.constexpr):
    """Input row o_src of a sequence starting at bos as fp32 [BD]: x from bos on, the old state's rows in
    [state_lo, bos), zeros before."""
    o_r = o_src + 0 * o_d  # [BD]: the masks stay vectors (the interpreter does not mix scalar and vector masks)
    b_x = tl.load(x + o_r * stride_x_t + o_d, mask=m_d & (o_r >= bos), other=0).to(tl.float32)
    b_s = tl.load(p_state + (L - bos + o_r) * stride_s_l + o_d, mask=m_d & (o_r < bos) & (o_r >= state_lo),
                  other=0).to(tl.float32)
    return b_x + b_s


@triton.jit
def conv_load_row(x, t, end, stride_x_t, o_d, m_d):
    """Input row t as fp32 [BD], zeros from row end on."""
    r = t + 0 * o_d  # [BD]: vector masks (see conv_source_row)
    return tl.load(x + r * stride_x_t + o_d, mask=m_d & (r < end), other=0).to(tl.float32)


@triton.jit
def conv_load_rows4(x, t, end, stride_x_t, o_d, m_d):
    """Input rows t .. t + 3 (conv_load_row)."""
    return (conv_load_row(x, t, end, stride_x_t, o_d, m_d), conv_load_row(x, t + 1, end, stride_x_t, o_d, m_d),
            conv_load_row(x, t + 2, end, stride_x_t, o_d, m_d), conv_load_row(x, t + 3, end, stride_x_t, o_d, m_d))


@triton.jit
def conv_store_row(out, t, end, b_y, o_d, m_d, D, ACTIVATION_SILU: tl.constexpr):
    if ACTIVATION_SILU:
        b_y = b_y * tl.sigmoid(b_y)
    r = t + 0 * o_d
    tl.store(out + r * D + o_d, b_y.to(out.dtype.element_ty), mask=m_d & (r < end))


@triton.jit(do_not_specialize=["N"])
def causal_conv1d_fwd_rows_kernel(
    x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state, out,
    N, D, stride_x_t, stride_s_n, stride_s_l,
    W: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    # One program per (chunk of BT tokens, block of BD channels), the channel blocks of a chunk adjacent. Each
    # input row is loaded once and the window of W - 1 <= 3 rows carried in registers. Rows go in groups of 4, the
    # next group loaded before the current one is stored: the compiler keeps loads behind earlier stores (x and
    # out may alias for all it knows), so a row at a time would wait out one load latency per row.
    ND = tl.cdiv(D, BD)
    i_d, i_p = tl.program_id(0) % ND, tl.program_id(0) // ND
    i_n, bos, eos, i_c, valid = seq_chunk_of_program(cu_seqlens, N, i_p, BT, BN)
    if not valid:
        return
    t0 = (bos + i_c * BT).to(tl.int64)
    end = tl.minimum(eos.to(tl.int64), t0 + BT)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    slot = tl.load(state_indices + i_n).to(tl.int64)
    if slot < 0:
        for i in tl.static_range(BT):
            conv_store_row(out, t0 + i, end, tl.zeros([BD], dtype=tl.float32), o_d, m_d, D, False)
        return
    state_lo = bos - L * tl.load(has_initial_state + i_n).to(tl.int32)
    p_state = conv_states + slot * stride_s_n
    # r1, r2, r3: input rows t0 - 1, t0 - 2, t0 - 3
    r1 = conv_source_row(x, p_state, t0 - 1, bos, state_lo, stride_x_t, stride_s_l, o_d, m_d, L)
    r2 = tl.zeros([BD], dtype=tl.float32)
    r3 = tl.zeros([BD], dtype=tl.float32)
    if W >= 3:
        r2 = conv_source_row(x, p_state, t0 - 2, bos, state_lo, stride_x_t, stride_s_l, o_d, m_d, L)
    if W >= 4:
        r3 = conv_source_row(x, p_state, t0 - 3, bos, state_lo, stride_x_t, stride_s_l, o_d, m_d, L)
    # w0 multiplies row t, w1 row t - 1, ...
    if W == 4:  # a channel's 4 taps in one load
        b_w = tl.load(weight + o_d[:, None] * W + tl.arange(0, 4)[None, :], mask=m_d[:, None], other=0)
        w31, w20 = tl.split(b_w.to(tl.float32).reshape([BD, 2, 2]))  # taps (0, 2) and (1, 3)
        w3, w1 = tl.split(w31)
        w2, w0 = tl.split(w20)
    else:
        w0 = tl.load(weight + o_d * W + (W - 1), mask=m_d, other=0).to(tl.float32)
        w1 = tl.load(weight + o_d * W + (W - 2), mask=m_d, other=0).to(tl.float32)
        w2 = tl.zeros([BD], dtype=tl.float32)
        w3 = tl.zeros([BD], dtype=tl.float32)
        if W >= 3:
            w2 = tl.load(weight + o_d * W + (W - 3), mask=m_d, other=0).to(tl.float32)
    b_bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(bias + o_d, mask=m_d, other=0).to(tl.float32)
    x0, x1, x2, x3 = conv_load_rows4(x, t0, end, stride_x_t, o_d, m_d)
    for g in tl.static_range(0, BT, 4):
        # the next group (all masked off after the last)
        n0, n1, n2, n3 = conv_load_rows4(x, t0 + g + 4, end, stride_x_t, o_d, m_d)
        conv_store_row(out, t0 + g, end, x0 * w0 + r1 * w1 + r2 * w2 + r3 * w3 + b_bias, o_d, m_d, D,
                       ACTIVATION_SILU)
        conv_store_row(out, t0 + g + 1, end, x1 * w0 + x0 * w1 + r1 * w2 + r2 * w3 + b_bias, o_d, m_d, D,
                       ACTIVATION_SILU)
        conv_store_row(out, t0 + g + 2, end, x2 * w0 + x1 * w1 + x0 * w2 + r1 * w3 + b_bias, o_d, m_d, D,
                       ACTIVATION_SILU)
        conv_store_row(out, t0 + g + 3, end, x3 * w0 + x2 * w1 + x1 * w2 + x0 * w3 + b_bias, o_d, m_d, D,
                       ACTIVATION_SILU)
        r3, r2, r1 = x1, x2, x3
        x0, x1, x2, x3 = n0, n1, n2, n3

    if i_c == 0:
        # The first chunk is the only reader of the old state, so it alone writes the new one.
        conv_write_final_state(x, p_state, bos, eos, state_lo, stride_x_t, stride_s_l, o_d, m_d, conv_states, L, BL)


@triton.jit
def conv_write_final_state(x, p_state, bos, eos, state_lo, stride_x_t, stride_s_l, o_d, m_d, conv_states,
                           L: tl.constexpr, BL: tl.constexpr):
    """New state row r holds token eos - L + r: from x, or (a sequence shorter than L) the old state's rows."""
    o_l = tl.arange(0, BL)
    o_row = eos - L + o_l  # [BL]
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
    W: tl.constexpr, L: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION_SILU: tl.constexpr,
):
    # One program per (sequence, block of BD channels), a row of BD channels at a time (no reduction across
    # threads). Each thread holds its channels through every row (the launcher keeps BD >= 32 num_warps, so no
    # element is held twice), so it overwrites a row only after it has read that row itself: no barrier.
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    b_y = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        b_y = tl.load(bias + o_d, mask=m_d, other=0).to(tl.float32)
    b_w = tl.load(weight + o_d * W + (W - 1), mask=m_d, other=0).to(tl.float32)
    p_out = out + i_b.to(tl.int64) * D + o_d
    slot = tl.load(state_indices + i_b).to(tl.int64)
    if slot < 0:
        tl.store(p_out, tl.zeros([BD], dtype=out.dtype.element_ty), mask=m_d)
        return
    p_state = conv_states + slot * stride_s_n + o_d
    b_x = tl.load(x + i_b.to(tl.int64) * stride_x_b + o_d, mask=m_d, other=0)
    b_y += b_x.to(tl.float32) * b_w
    for r in tl.static_range(L):
        b_s = tl.load(p_state + r * stride_s_l, mask=m_d, other=0)
        if r >= L - (W - 1):  # row r is tap r - (L - (W - 1)) of the window
            b_y += b_s.to(tl.float32) * tl.load(weight + o_d * W + (r - (L - (W - 1))), mask=m_d,
                                                 other=0).to(tl.float32)
        if r >= 1:  # new row r - 1 is old row r
            tl.store(p_state + (r - 1) * stride_s_l, b_s, mask=m_d)
    tl.store(p_state + (L - 1) * stride_s_l, b_x.to(conv_states.dtype.element_ty), mask=m_d)
    if ACTIVATION_SILU:
        b_y = b_y * tl.sigmoid(b_y)
    tl.store(p_out, b_y.to(out.dtype.element_ty), mask=m_d)


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
                             has_initial_state: torch.Tensor, activation_silu: bool, BT: int | None = None,
                             BD: int | None = None, num_warps: int | None = None, rows: bool | None = None
                             ) -> torch.Tensor:
    """Triton causal_conv1d_fwd; same contract as the CPU op (see ops.py). x: [T, D] -> out: [T, D].

    rows: the rows kernel (2 <= W <= 4), else the tile kernel; None: CONV_FWD_ROWS where 2 <= W <= 4."""
    T, D, W, L, N = _check_conv(x, weight, bias, conv_states, state_indices, cu_seqlens)
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    out = torch.empty(T, D, dtype=x.dtype, device=x.device)
    if T == 0 or N == 0:
        return out
    rows = (2 <= W <= 4 and CONV_FWD_ROWS) if rows is None else rows
    d_BT, d_BD, d_nw = CONV_FWD_BLOCKS["rows" if rows else "tile"]
    BT, BD, num_warps = BT or d_BT, BD or d_BD, num_warps or d_nw
    assert not rows or (2 <= W <= 4 and BT % 4 == 0), "the rows kernel carries 1 to 3 rows, in groups of 4"
    kernel = causal_conv1d_fwd_rows_kernel if rows else causal_conv1d_fwd_kernel
    grid = ((triton.cdiv(T, BT) + N) * triton.cdiv(D, BD),) if rows else (triton.cdiv(T, BT) + N, triton.cdiv(D, BD))
    kernel[grid](
        x, weight, bias, conv_states, cu_seqlens, state_indices, has_initial_state.view(torch.uint8), out,
        N, D, x.stride(0), conv_states.stride(0), conv_states.stride(1),
        W=W, L=L, BL=triton.next_power_of_2(L), BT=BT, BD=BD, BN=seq_block(N),
        HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu, num_warps=num_warps,
    )
    return out


# The conv prefill kernel by default, and each kernel's (BT, BD, num_warps): rows 16 x 256 on 2 warps within 2.5% of
# the best variant in both cases on an H100, 84% and 93% of copy bandwidth (RESULTS_H100_conv.md)
CONV_FWD_ROWS = True
CONV_FWD_BLOCKS = {"rows": (16, 256, 2), "tile": (64, 128, 4)}


def causal_conv1d_update_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                conv_states: torch.Tensor, state_indices: torch.Tensor, activation_silu: bool,
                                BD: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """Triton causal_conv1d_update; same contract as the CPU op. x: [B, D] -> out: [B, D]."""
    B, D, W, L, _ = _check_conv(x, weight, bias, conv_states, state_indices)
    assert state_indices.shape == (B,)
    out = torch.empty(B, D, dtype=x.dtype, device=x.device)
    if B == 0:
        return out
    BD, num_warps = BD or CONV_UPDATE_BLOCK[0], num_warps or CONV_UPDATE_BLOCK[1]
    assert BD >= 32 * num_warps, "the conv update needs every channel held by one thread: BD >= 32 num_warps"
    causal_conv1d_update_kernel[(B, triton.cdiv(D, BD))](
        x, weight, bias, conv_states, state_indices, out, D, x.stride(0), conv_states.stride(0),
        conv_states.stride(1), W=W, L=L, BD=BD, HAS_BIAS=bias is not None, ACTIVATION_SILU=activation_silu,
        num_warps=num_warps,
    )
    return out


# (BD, num_warps) of the conv update: measured on the H200 (RESULTS_H200.md)
CONV_UPDATE_BLOCK = (256, 4)


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

