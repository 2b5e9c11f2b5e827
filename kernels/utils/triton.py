"""Triton helpers shared by the op folders: varlen program maps, the gating and norm arithmetic, the delta-rule
step, launch-size choices. The shape legend is the package's (qwen3next_kernels/__init__.py)."""
import triton
import triton.language as tl


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


@triton.jit
def softplus_gate(a, A_log, dt_bias):
    """-exp(A_log) * softplus(a + dt_bias) in fp32; softplus with beta 1 and threshold 20, as torch's."""
    x = a.to(tl.float32) + dt_bias.to(tl.float32)
    sp = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    return -tl.exp(A_log.to(tl.float32)) * sp


@triton.jit
def gated_rms_norm_apply(b_x, b_z, b_w, eps, V: tl.constexpr, ROUND_DTYPE: tl.constexpr,
                         ROUND_PRODUCT: tl.constexpr):
    """b_x, b_z: [R, BV] fp32 (zeros past V), b_w: [BV] fp32 -> [R, BV] fp32.

    h = x * rsqrt(mean(x^2) + eps) rounded to ROUND_DTYPE, times weight (rounded again when the weight is
    low precision too, as torch's promotion does), times silu(z)."""
    rstd = 1.0 / tl.sqrt(tl.sum(b_x * b_x, 1) / V + eps)  # [R]
    b_h = (b_x * rstd[:, None]).to(ROUND_DTYPE).to(tl.float32) * b_w[None, :]
    if ROUND_PRODUCT:
        b_h = b_h.to(ROUND_DTYPE).to(tl.float32)
    return b_h * b_z * tl.sigmoid(b_z)


@triton.jit
def l2norm_vec(b_x, USE_L2NORM: tl.constexpr):
    """fla's l2norm of an fp32 vector: x * rsqrt(sum(x^2) + 1e-6)."""
    if USE_L2NORM:
        b_x = b_x * (1.0 / tl.sqrt(tl.sum(b_x * b_x, 0) + 1e-6))
    return b_x


@triton.jit
def gated_delta_rule_step(b_h, b_q, b_k, b_v, b_g, b_beta, STATE_VK: tl.constexpr):
    """One step on an fp32 state tile in memory order (state_tile_offsets): [BV, BK] with STATE_VK, else [BK, BV].
    Returns (new state tile, o [BV])."""
    b_h = b_h * tl.exp(b_g)
    if STATE_VK:
        b_v = b_beta * (b_v - tl.sum(b_h * b_k[None, :], 1))
        b_h = b_h + b_v[:, None] * b_k[None, :]
        b_o = tl.sum(b_h * b_q[None, :], 1)
    else:
        b_v = b_beta * (b_v - tl.sum(b_h * b_k[:, None], 0))
        b_h = b_h + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], 0)
    return b_h, b_o


def value_blocks(n_heads: int, V: int, BV=None, num_warps=None, state_vk: bool = False):
    """(BV, num_warps) of the decode kernels, for n_heads = B * HV state slices. States laid out [V, K]: a block of
    BV rows is contiguous, so one warp per 32 rows (vLLM's choice for its decode kernel). Laid out [K, V]: many
    slices, whole [K, V] tiles (rows of 64 B at BV = 32 halve the HBM rate on the H200); few, narrow V blocks, so
    that enough programs run at once."""
    if BV is None:
        if state_vk:
            BV, nw = 32, 1
        else:
            BV, nw = (128, 4) if n_heads >= 2048 else ((64, 4) if n_heads >= 256 else (16, 1))
        num_warps = num_warps or nw
    return min(BV, triton.next_power_of_2(V)), num_warps or 1


@triton.jit
def state_offsets(o_k, o_v, K: tl.constexpr, V: tl.constexpr, STATE_VK: tl.constexpr):
    """Offsets of a [BK, BV] tile of one head's state in memory laid out [K, V] or, with STATE_VK, [V, K]."""
    if STATE_VK:
        return o_v[None, :] * K + o_k[:, None]
    return o_k[:, None] * V + o_v[None, :]


@triton.jit
def state_tile_offsets(o_k, o_v, K: tl.constexpr, V: tl.constexpr, STATE_VK: tl.constexpr):
    """Offsets of one head's state slice as a tile in memory order, the contiguous dimension last: [BV, BK] for
    memory laid out [V, K] (STATE_VK), else [BK, BV]. The recurrent kernels keep their tiles so."""
    if STATE_VK:
        offsets = o_v[:, None] * K + o_k[None, :]
    else:
        offsets = o_k[:, None] * V + o_v[None, :]
    return offsets


@triton.jit
def state_tile_mask(m_k, m_v, STATE_VK: tl.constexpr):
    """The mask of a state_tile_offsets tile."""
    if STATE_VK:
        mask = m_v[:, None] & m_k[None, :]
    else:
        mask = m_k[:, None] & m_v[None, :]
    return mask


@triton.jit
def head_block_of_program(NV: tl.constexpr):
    """(i_bh, i_v) of a flat grid of B * HV * NV programs, the NV value blocks of a head adjacent (they read
    adjacent memory: one head's state is contiguous)."""
    i_p = tl.program_id(0)
    return i_p // NV, i_p % NV


def state_is_vk(ssm_states) -> bool:
    """The ops take states shaped [S, HV, K, V]; the memory of each slot is a contiguous [HV, K, V] or, as a
    transposed view, [HV, V, K] (vLLM's and FlashInfer's layout, where a block of V rows is contiguous)."""
    HV, K, V = ssm_states.shape[1:]
    strides = ssm_states.stride()[1:]
    assert strides in ((K * V, V, 1), (K * V, 1, K)), \
        f"each state slot must be a contiguous [HV, K, V] or [HV, V, K], got strides {strides}"
    return strides == (K * V, 1, K) and K != 1
