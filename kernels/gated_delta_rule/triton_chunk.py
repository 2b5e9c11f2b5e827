"""Chunked gated delta rule prefill in Triton: two kernels, l2norm fused in,
initial and final states read and written in the cache by slot.

BT = chunk size (64), BC = sub-chunk (16).

Within a chunk of BT tokens with cumulative log decay gc (gc_i = g_1 + ... + g_i):
    A[i, j]   = beta_i (k_i . k_j) exp(gc_i - gc_j)         for i > j
    Ainv      = (I + A)^-1                                  (the WY / UT transform)
    Aqk[i, j] = scale (q_i . k_j) exp(gc_i - gc_j)          for i >= j
and, with the state h [K, V] at the chunk start,
    v_new     = Ainv (beta * (v - exp(gc) * (k h)))         (the corrected values, "u - w h" of fla)
    o         = scale exp(gc) * (q h) + Aqk v_new
    h_next    = exp(gc_last) h + (k * exp(gc_last - gc))^T v_new
Kernel 1 (chunk_gated_delta_rule_fwd_intra_kernel) computes Ainv and Aqk for every chunk in parallel, one program per
(chunk, key head) for all value heads of the group; kernel 2 (chunk_gated_delta_rule_fwd_kernel) walks the chunks of one
sequence in order, one program per (sequence, value head, V block), with the state in registers.
"""
import os

import torch
import triton
import triton.language as tl

from ..utils.triton import seq_block, seq_chunk_of_program, state_is_vk, state_offsets


@triton.jit
def load_rows(p, o_t, eos, stride_t, o_k, m_k, USE_L2NORM: tl.constexpr):
    """Rows o_t ([R]) of a [*, K] head slice as fp32, zeros past eos, l2-normalised if asked: [R, BK]."""
    m = (o_t < eos)[:, None] & m_k[None, :]
    b_x = tl.load(p + o_t.to(tl.int64)[:, None] * stride_t + o_k[None, :], mask=m, other=0).to(tl.float32)
    if USE_L2NORM:
        b_x = b_x * (1.0 / tl.sqrt(tl.sum(b_x * b_x, 1) + 1e-6))[:, None]
    return b_x


@triton.jit
def load_gate(g, beta, o_t, eos, i_hv, stride_g_t, stride_b_t):
    """Log decay and beta ([R] fp32, zeros past eos) of value head i_hv."""
    m_t = o_t < eos
    b_g = tl.load(g + o_t.to(tl.int64) * stride_g_t + i_hv, mask=m_t, other=0)
    b_b = tl.load(beta + o_t.to(tl.int64) * stride_b_t + i_hv, mask=m_t, other=0)
    return b_g.to(tl.float32), b_b.to(tl.float32)


@triton.jit
def invert_unit_lower(b_A, BC: tl.constexpr):
    """(I + A)^-1 for a strictly lower triangular [BC, BC] A, by forward substitution over the rows."""
    o_i = tl.arange(0, BC)
    b_X = tl.where(o_i[:, None] == o_i[None, :], 1.0, 0.0)
    for i in range(1, BC):
        m_i = o_i == i
        b_a = tl.sum(tl.where(m_i[:, None], b_A, 0.0), 0)  # A[i, :]
        b_row = tl.where(m_i, 1.0, 0.0) - tl.sum(b_a[:, None] * b_X, 0)  # X[i, :] = e_i - A[i, :] X
        b_X = tl.where(m_i[:, None], b_row[None, :], b_X)
    return b_X


@triton.jit
def decay_lower(b_x, b_gi, b_gj, b_bi, o_c, DIAG: tl.constexpr, STRICT: tl.constexpr):
    """b_bi[i] * b_x[i, j] * exp(gc_i - gc_j); on a diagonal block only i > j (STRICT) or i >= j."""
    if DIAG:
        if STRICT:
            m = o_c[:, None] > o_c[None, :]
        else:
            m = o_c[:, None] >= o_c[None, :]
        return tl.where(m, b_bi[:, None] * b_x * tl.exp(tl.where(m, b_gi[:, None] - b_gj[None, :], 0.0)), 0.0)
    return b_bi[:, None] * b_x * tl.exp(b_gi[:, None] - b_gj[None, :])


@triton.jit
def store_block(p, b_x, o_t, eos, stride_t, col0, o_c):
    tl.store(p + o_t.to(tl.int64)[:, None] * stride_t + col0 + o_c[None, :], b_x.to(p.dtype.element_ty),
             mask=(o_t < eos)[:, None])


@triton.jit
def store_rows(p, b_x, o_t, eos, stride_t, o_c, m_c):
    tl.store(p + o_t.to(tl.int64)[:, None] * stride_t + o_c[None, :], b_x.to(p.dtype.element_ty),
             mask=(o_t < eos)[:, None] & m_c[None, :])


@triton.jit(do_not_specialize=["N"])
def chunk_gated_delta_rule_fwd_intra_kernel(
    q, k, v, g, beta, w, u, Aqk, cu_seqlens, scale, N,
    stride_q_t, stride_k_t, stride_v_t, stride_g_t, stride_b_t,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BVF: tl.constexpr,
    BT: tl.constexpr, BN: tl.constexpr,
    USE_L2NORM: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    BC: tl.constexpr = 16  # BT == 4 * BC, written out block by block below
    G: tl.constexpr = HV // H
    i_p, i_h = tl.program_id(0), tl.program_id(1)
    i_n, bos, eos, i_c, valid = seq_chunk_of_program(cu_seqlens, N, i_p, BT, BN)
    if not valid:
        return
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_t0 = bos + i_c * BT + o_c
    o_t1 = o_t0 + BC
    o_t2 = o_t1 + BC
    o_t3 = o_t2 + BC
    dt = DOT_DTYPE
    p_k = k + i_h * K
    b_k0 = load_rows(p_k, o_t0, eos, stride_k_t, o_k, m_k, USE_L2NORM).to(dt)
    b_k1 = load_rows(p_k, o_t1, eos, stride_k_t, o_k, m_k, USE_L2NORM).to(dt)
    b_k2 = load_rows(p_k, o_t2, eos, stride_k_t, o_k, m_k, USE_L2NORM).to(dt)
    b_k3 = load_rows(p_k, o_t3, eos, stride_k_t, o_k, m_k, USE_L2NORM).to(dt)
    # k k^T and q k^T by [BC, BC] blocks, shared by the value heads of this key head
    b_kk00 = tl.dot(b_k0, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_kk10 = tl.dot(b_k1, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_kk11 = tl.dot(b_k1, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_kk20 = tl.dot(b_k2, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_kk21 = tl.dot(b_k2, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_kk22 = tl.dot(b_k2, tl.trans(b_k2), input_precision=DOT_PRECISION)
    b_kk30 = tl.dot(b_k3, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_kk31 = tl.dot(b_k3, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_kk32 = tl.dot(b_k3, tl.trans(b_k2), input_precision=DOT_PRECISION)
    b_kk33 = tl.dot(b_k3, tl.trans(b_k3), input_precision=DOT_PRECISION)
    p_q = q + i_h * K
    b_q = load_rows(p_q, o_t0, eos, stride_q_t, o_k, m_k, USE_L2NORM).to(dt)
    b_qk00 = tl.dot(b_q, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_q = load_rows(p_q, o_t1, eos, stride_q_t, o_k, m_k, USE_L2NORM).to(dt)
    b_qk10 = tl.dot(b_q, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_qk11 = tl.dot(b_q, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_q = load_rows(p_q, o_t2, eos, stride_q_t, o_k, m_k, USE_L2NORM).to(dt)
    b_qk20 = tl.dot(b_q, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_qk21 = tl.dot(b_q, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_qk22 = tl.dot(b_q, tl.trans(b_k2), input_precision=DOT_PRECISION)
    b_q = load_rows(p_q, o_t3, eos, stride_q_t, o_k, m_k, USE_L2NORM).to(dt)
    b_qk30 = tl.dot(b_q, tl.trans(b_k0), input_precision=DOT_PRECISION)
    b_qk31 = tl.dot(b_q, tl.trans(b_k1), input_precision=DOT_PRECISION)
    b_qk32 = tl.dot(b_q, tl.trans(b_k2), input_precision=DOT_PRECISION)
    b_qk33 = tl.dot(b_q, tl.trans(b_k3), input_precision=DOT_PRECISION)

    b_one = tl.full([BC], 1.0, tl.float32)
    b_scale = b_one * scale
    for j in tl.static_range(G):
        i_hv = i_h * G + j
        b_g0, b_b0 = load_gate(g, beta, o_t0, eos, i_hv, stride_g_t, stride_b_t)
        b_g1, b_b1 = load_gate(g, beta, o_t1, eos, i_hv, stride_g_t, stride_b_t)
        b_g2, b_b2 = load_gate(g, beta, o_t2, eos, i_hv, stride_g_t, stride_b_t)
        b_g3, b_b3 = load_gate(g, beta, o_t3, eos, i_hv, stride_g_t, stride_b_t)
        b_g0 = tl.cumsum(b_g0, 0)
        b_g1 = tl.cumsum(b_g1, 0) + tl.sum(tl.where(o_c == BC - 1, b_g0, 0.0), 0)
        b_g2 = tl.cumsum(b_g2, 0) + tl.sum(tl.where(o_c == BC - 1, b_g1, 0.0), 0)
        b_g3 = tl.cumsum(b_g3, 0) + tl.sum(tl.where(o_c == BC - 1, b_g2, 0.0), 0)

        # Ainv = (I + A)^-1 blockwise: X_ii = (I + A_ii)^-1, X_ij = -X_ii sum_{j <= m < i} A_im X_mj
        b_X00 = invert_unit_lower(decay_lower(b_kk00, b_g0, b_g0, b_b0, o_c, True, True), BC)
        b_X11 = invert_unit_lower(decay_lower(b_kk11, b_g1, b_g1, b_b1, o_c, True, True), BC)
        b_X22 = invert_unit_lower(decay_lower(b_kk22, b_g2, b_g2, b_b2, o_c, True, True), BC)
        b_X33 = invert_unit_lower(decay_lower(b_kk33, b_g3, b_g3, b_b3, o_c, True, True), BC)
        b_A10 = decay_lower(b_kk10, b_g1, b_g0, b_b1, o_c, False, True)
        b_A20 = decay_lower(b_kk20, b_g2, b_g0, b_b2, o_c, False, True)
        b_A21 = decay_lower(b_kk21, b_g2, b_g1, b_b2, o_c, False, True)
        b_A30 = decay_lower(b_kk30, b_g3, b_g0, b_b3, o_c, False, True)
        b_A31 = decay_lower(b_kk31, b_g3, b_g1, b_b3, o_c, False, True)
        b_A32 = decay_lower(b_kk32, b_g3, b_g2, b_b3, o_c, False, True)
        b_X10 = -tl.dot(b_X11, tl.dot(b_A10, b_X00, input_precision=DOT_PRECISION),
                        input_precision=DOT_PRECISION)
        b_X21 = -tl.dot(b_X22, tl.dot(b_A21, b_X11, input_precision=DOT_PRECISION),
                        input_precision=DOT_PRECISION)
        b_X32 = -tl.dot(b_X33, tl.dot(b_A32, b_X22, input_precision=DOT_PRECISION),
                        input_precision=DOT_PRECISION)
        b_X20 = -tl.dot(b_X22, tl.dot(b_A20, b_X00, input_precision=DOT_PRECISION)
                        + tl.dot(b_A21, b_X10, input_precision=DOT_PRECISION), input_precision=DOT_PRECISION)
        b_X31 = -tl.dot(b_X33, tl.dot(b_A31, b_X11, input_precision=DOT_PRECISION)
                        + tl.dot(b_A32, b_X21, input_precision=DOT_PRECISION), input_precision=DOT_PRECISION)
        b_X30 = -tl.dot(b_X33, tl.dot(b_A30, b_X00, input_precision=DOT_PRECISION)
                        + tl.dot(b_A31, b_X10, input_precision=DOT_PRECISION)
                        + tl.dot(b_A32, b_X20, input_precision=DOT_PRECISION), input_precision=DOT_PRECISION)
        # w = Ainv (beta exp(gc) k) and u = Ainv (beta v), by row blocks
        b_X00, b_X10, b_X11 = b_X00.to(dt), b_X10.to(dt), b_X11.to(dt)
        b_X20, b_X21, b_X22 = b_X20.to(dt), b_X21.to(dt), b_X22.to(dt)
        b_X30, b_X31, b_X32, b_X33 = b_X30.to(dt), b_X31.to(dt), b_X32.to(dt), b_X33.to(dt)
        b_a0 = (b_k0.to(tl.float32) * (b_b0 * tl.exp(b_g0))[:, None]).to(dt)
        b_a1 = (b_k1.to(tl.float32) * (b_b1 * tl.exp(b_g1))[:, None]).to(dt)
        b_a2 = (b_k2.to(tl.float32) * (b_b2 * tl.exp(b_g2))[:, None]).to(dt)
        b_a3 = (b_k3.to(tl.float32) * (b_b3 * tl.exp(b_g3))[:, None]).to(dt)
        p_w = w + i_hv * K
        store_rows(p_w, tl.dot(b_X00, b_a0, input_precision=DOT_PRECISION), o_t0, eos, HV * K, o_k, m_k)
        store_rows(p_w, tl.dot(b_X10, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X11, b_a1, input_precision=DOT_PRECISION), o_t1, eos, HV * K, o_k, m_k)
        store_rows(p_w, tl.dot(b_X20, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X21, b_a1, input_precision=DOT_PRECISION)
                   + tl.dot(b_X22, b_a2, input_precision=DOT_PRECISION), o_t2, eos, HV * K, o_k, m_k)
        store_rows(p_w, tl.dot(b_X30, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X31, b_a1, input_precision=DOT_PRECISION)
                   + tl.dot(b_X32, b_a2, input_precision=DOT_PRECISION)
                   + tl.dot(b_X33, b_a3, input_precision=DOT_PRECISION), o_t3, eos, HV * K, o_k, m_k)
        o_vf = tl.arange(0, BVF)
        m_vf = o_vf < V
        p_v = v + i_hv * V
        b_a0 = (load_rows(p_v, o_t0, eos, stride_v_t, o_vf, m_vf, False) * b_b0[:, None]).to(dt)
        b_a1 = (load_rows(p_v, o_t1, eos, stride_v_t, o_vf, m_vf, False) * b_b1[:, None]).to(dt)
        b_a2 = (load_rows(p_v, o_t2, eos, stride_v_t, o_vf, m_vf, False) * b_b2[:, None]).to(dt)
        b_a3 = (load_rows(p_v, o_t3, eos, stride_v_t, o_vf, m_vf, False) * b_b3[:, None]).to(dt)
        p_u = u + i_hv * V
        store_rows(p_u, tl.dot(b_X00, b_a0, input_precision=DOT_PRECISION), o_t0, eos, HV * V, o_vf, m_vf)
        store_rows(p_u, tl.dot(b_X10, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X11, b_a1, input_precision=DOT_PRECISION), o_t1, eos, HV * V, o_vf, m_vf)
        store_rows(p_u, tl.dot(b_X20, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X21, b_a1, input_precision=DOT_PRECISION)
                   + tl.dot(b_X22, b_a2, input_precision=DOT_PRECISION), o_t2, eos, HV * V, o_vf, m_vf)
        store_rows(p_u, tl.dot(b_X30, b_a0, input_precision=DOT_PRECISION)
                   + tl.dot(b_X31, b_a1, input_precision=DOT_PRECISION)
                   + tl.dot(b_X32, b_a2, input_precision=DOT_PRECISION)
                   + tl.dot(b_X33, b_a3, input_precision=DOT_PRECISION), o_t3, eos, HV * V, o_vf, m_vf)

        p_A = Aqk + i_hv * BT
        store_block(p_A, decay_lower(b_qk00, b_g0, b_g0, b_scale, o_c, True, False), o_t0, eos, HV * BT, 0, o_c)
        store_block(p_A, decay_lower(b_qk10, b_g1, b_g0, b_scale, o_c, False, False), o_t1, eos, HV * BT, 0, o_c)
        store_block(p_A, decay_lower(b_qk11, b_g1, b_g1, b_scale, o_c, True, False), o_t1, eos, HV * BT, BC, o_c)
        store_block(p_A, decay_lower(b_qk20, b_g2, b_g0, b_scale, o_c, False, False), o_t2, eos, HV * BT, 0, o_c)
        store_block(p_A, decay_lower(b_qk21, b_g2, b_g1, b_scale, o_c, False, False), o_t2, eos, HV * BT, BC,
                    o_c)
        store_block(p_A, decay_lower(b_qk22, b_g2, b_g2, b_scale, o_c, True, False), o_t2, eos, HV * BT, 2 * BC,
                    o_c)
        store_block(p_A, decay_lower(b_qk30, b_g3, b_g0, b_scale, o_c, False, False), o_t3, eos, HV * BT, 0, o_c)
        store_block(p_A, decay_lower(b_qk31, b_g3, b_g1, b_scale, o_c, False, False), o_t3, eos, HV * BT, BC,
                    o_c)
        store_block(p_A, decay_lower(b_qk32, b_g3, b_g2, b_scale, o_c, False, False), o_t3, eos, HV * BT, 2 * BC,
                    o_c)
        store_block(p_A, decay_lower(b_qk33, b_g3, b_g3, b_scale, o_c, True, False), o_t3, eos, HV * BT, 3 * BC,
                    o_c)


@triton.jit
def chunk_gated_delta_rule_fwd_kernel(
    q, k, w, u, g, Aqk, o, ssm_states, cu_seqlens, state_indices, has_initial_state,
    scale, stride_q_t, stride_k_t, stride_g_t, stride_s_n,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BT: tl.constexpr, USE_L2NORM: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STATE_VK: tl.constexpr,
):
    i_nh, i_v = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos = tl.load(cu_seqlens + i_n)
    eos = tl.load(cu_seqlens + i_n + 1)
    NC = tl.cdiv(eos - bos, BT)
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_o = o + i_hv * V + o_v[None, :]
    slot = tl.load(state_indices + i_n).to(tl.int64)
    if slot < 0:
        for i_c in range(NC):
            o_t = bos + i_c * BT + o_i
            tl.store(p_o + o_t.to(tl.int64)[:, None] * (HV * V), tl.zeros([BT, BV], dtype=o.dtype.element_ty),
                     mask=(o_t < eos)[:, None] & m_v[None, :])
        return
    dt = DOT_DTYPE
    p_h = ssm_states + slot * stride_s_n + i_hv * K * V + state_offsets(o_k, o_v, K, V, STATE_VK)
    m_h = m_k[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if tl.load(has_initial_state + i_n) != 0:
        b_h = tl.load(p_h, mask=m_h, other=0).to(tl.float32)
    m_tri = o_i[None, :] <= o_i[:, None]
    for i_c in range(NC):
        o_t = bos + i_c * BT + o_i  # [BT]
        m_t = o_t < eos
        b_q = load_rows(q + i_h * K, o_t, eos, stride_q_t, o_k, m_k, USE_L2NORM)
        b_k = load_rows(k + i_h * K, o_t, eos, stride_k_t, o_k, m_k, USE_L2NORM)
        b_g, _ = load_gate(g, g, o_t, eos, i_hv, stride_g_t, stride_g_t)
        b_g = tl.cumsum(b_g, 0)
        b_glast = tl.sum(tl.where(o_i == BT - 1, b_g, 0.0), 0)
        m_tv = m_t[:, None] & m_v[None, :]
        b_w = load_rows(w + i_hv * K, o_t, eos, HV * K, o_k, m_k, False).to(dt)
        b_u = tl.load(u + o_t.to(tl.int64)[:, None] * (HV * V) + i_hv * V + o_v[None, :], mask=m_tv,
                      other=0).to(tl.float32)
        b_Aqk = tl.load(Aqk + o_t.to(tl.int64)[:, None] * (HV * BT) + i_hv * BT + o_i[None, :],
                        mask=m_tri & m_t[:, None], other=0).to(dt)

        b_hd = b_h.to(dt)
        b_vn = (b_u - tl.dot(b_w, b_hd, input_precision=DOT_PRECISION)).to(dt)  # v_new: [BT, BV]
        b_qg = (b_q * (scale * tl.exp(b_g))[:, None]).to(dt)
        b_o = tl.dot(b_qg, b_hd, input_precision=DOT_PRECISION)
        b_o += tl.dot(b_Aqk, b_vn, input_precision=DOT_PRECISION)
        tl.store(p_o + o_t.to(tl.int64)[:, None] * (HV * V), b_o.to(o.dtype.element_ty), mask=m_tv)
        b_kd = (b_k * tl.exp(b_glast - b_g)[:, None]).to(dt)
        b_h = b_h * tl.exp(b_glast) + tl.dot(tl.trans(b_kd), b_vn, input_precision=DOT_PRECISION)
    tl.store(p_h, b_h.to(ssm_states.dtype.element_ty), mask=m_h)


def _check_chunk_args(q, k, v, g, beta, ssm_states, state_indices):
    T, H, K = q.shape
    HV, V = v.shape[1:]
    assert k.shape == (T, H, K) and v.shape[0] == T and HV % H == 0
    assert g.shape == (T, HV) and beta.shape == (T, HV)
    assert g.dtype == torch.float32 and beta.dtype == torch.float32, "g and beta must be fp32"
    assert q.stride(2) == 1 and k.stride(2) == 1 and v.stride(2) == 1, "q, k, v need a unit stride on the last dim"
    assert q.stride(1) == K and k.stride(1) == K and v.stride(1) == V, "heads of q, k, v must be packed in a row"
    assert g.stride(1) == 1 and beta.stride(1) == 1
    assert q.dtype == k.dtype, "q and k must share a dtype"
    assert ssm_states.dim() == 4 and ssm_states.shape[1:] == (HV, K, V), \
        f"ssm_states must be [S, {HV}, {K}, {V}], got {tuple(ssm_states.shape)}"
    state_is_vk(ssm_states)
    assert ssm_states.dtype in (torch.float32, torch.bfloat16, torch.float16)
    assert state_indices.dtype == torch.int32 and state_indices.is_contiguous()


def dot_config(dtype: torch.dtype, recurrent: bool):
    """(operand type, input_precision) of the tensor-core dots for activations of this dtype.

    fp32 activations: fp32 operands in three tf32 passes (close to fp32). 16-bit activations: 16-bit operands in
    the chunk-local kernel; the recurrent kernel takes fp32 operands in one tf32 pass, because with 16-bit operands
    Triton 3.6 miscompiled it on the H200 at K = 128 (wrong results; right at K = 32 and in the interpreter). The
    CPU interpreter multiplies bf16 operands as their raw bits, so there every dot takes fp32."""
    if dtype == torch.float32:
        return tl.float32, "tf32x3"
    if recurrent or os.environ.get("TRITON_INTERPRET") == "1":
        return tl.float32, "tf32"
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype], "tf32"


def chunk_gated_delta_rule_fwd_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                      has_initial_state, use_qk_l2norm, BV=None, num_warps=4, num_stages=None):
    """Runs both kernels. Returns o: [T, HV, V] in v.dtype."""
    _check_chunk_args(q, k, v, g, beta, ssm_states, state_indices)
    state_vk = state_is_vk(ssm_states)
    T, H, K = q.shape
    HV, V = v.shape[1:]
    N = state_indices.shape[0]
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.shape == (N + 1,)
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    o = torch.empty(T, HV, V, dtype=v.dtype, device=v.device)
    if T == 0 or N == 0:
        return o
    BT = 64
    BK = triton.next_power_of_2(K)
    assert BK >= 16
    w = torch.empty(T, HV, K, dtype=k.dtype, device=k.device)
    u = torch.empty(T, HV, V, dtype=k.dtype, device=k.device)
    Aqk = torch.empty(T, HV, BT, dtype=k.dtype, device=k.device)
    dot_dt, prec = dot_config(k.dtype, recurrent=False)
    chunk_gated_delta_rule_fwd_intra_kernel[(triton.cdiv(T, BT) + N, H)](
        q, k, v, g, beta, w, u, Aqk, cu_seqlens, scale, N,
        q.stride(0), k.stride(0), v.stride(0), g.stride(0), beta.stride(0),
        H=H, HV=HV, K=K, V=V, BK=BK, BVF=triton.next_power_of_2(V), BT=BT, BN=seq_block(N),
        USE_L2NORM=use_qk_l2norm, DOT_DTYPE=dot_dt, DOT_PRECISION=prec, num_warps=4,
    )
    if BV is None:
        BV = 32 if N * HV * 4 >= 256 else 16
    BV = min(BV, max(16, triton.next_power_of_2(V)))
    if num_stages is None:  # fp32 operands at two stages overflow shared memory
        num_stages = 1 if k.dtype == torch.float32 else 2
    dot_dt, prec = dot_config(k.dtype, recurrent=True)
    chunk_gated_delta_rule_fwd_kernel[(N * HV, triton.cdiv(V, BV))](
        q, k, w, u, g, Aqk, o, ssm_states, cu_seqlens, state_indices,
        has_initial_state.view(torch.uint8), scale,
        q.stride(0), k.stride(0), g.stride(0), ssm_states.stride(0),
        H=H, HV=HV, K=K, V=V, BK=BK, BV=BV, BT=BT,
        USE_L2NORM=use_qk_l2norm, DOT_DTYPE=dot_dt, DOT_PRECISION=prec, STATE_VK=state_vk, num_warps=num_warps,
        num_stages=num_stages,
    )
    return o


def chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                  has_initial_state, use_qk_l2norm):
    """Triton chunk_gated_delta_rule; same contract as the CPU op (see ops.py)."""
    return chunk_gated_delta_rule_fwd_triton(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                             has_initial_state, use_qk_l2norm)

