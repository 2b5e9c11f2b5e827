"""Our CPU stand-ins for vLLM 0.32's Triton-only hybrid-state copy kernels
(vllm_qwen3next/fixes/mamba_copy.py) against plain per-element references written from the
Triton kernels' definitions, launched the way vLLM's runner launches them
(`MambaSpecDecodeGPUContext.run_fused_*`, `kernel[grid](...)` through the dispatcher), on
state tensors laid out as vLLM lays out hybrid pages (conv state and temporal state views
into one padded page per block). The end-to-end check is tests/test_mtp_prefix_cache.py."""

import random

import pytest
import torch

from vllm_qwen3next.fixes import mamba_copy

BLOCK = 4  # tokens per cache block
WIDTH, DIM = 3, 10  # conv state: kernel - 1 columns of DIM channels
TEMPORAL = (2, 4, 5)  # recurrent state per block
NUM_BLOCKS, MAX_COLS = 300, 12


@pytest.fixture(scope="module", autouse=True)
def installed():
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("CPU stand-ins")
    mamba_copy.install()  # what the model's constructor does in the worker
    from vllm.v1.worker import mamba_utils

    for name in mamba_copy.KERNELS:
        assert hasattr(getattr(mamba_utils, name.rsplit(".", 1)[1]), "__getitem__"), name


def _layer(dtype, dim_first: bool, seed: int):
    """One GDN layer's (conv, temporal) state views into a padded page per block, as vLLM's
    hybrid allocator makes them (the page stride exceeds the states' own size)."""
    elem = torch.empty((), dtype=dtype).element_size()
    conv_n, temporal_n = WIDTH * DIM, TEMPORAL[0] * TEMPORAL[1] * TEMPORAL[2]
    page = conv_n + temporal_n + 7  # elements; the padding must never be written
    raw = torch.randn(NUM_BLOCKS * page, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if dim_first:
        conv = raw.as_strided((NUM_BLOCKS, DIM, WIDTH), (page, WIDTH, 1))
    else:
        conv = raw.as_strided((NUM_BLOCKS, WIDTH, DIM), (page, DIM, 1))
    temporal = raw.as_strided((NUM_BLOCKS, *TEMPORAL), (page, TEMPORAL[1] * TEMPORAL[2], TEMPORAL[2], 1), conv_n)
    assert elem in (2, 4)
    return raw, conv, temporal


def _context(layers, tables, dim_first: bool, max_reqs: int):
    """vLLM's own context object, its metadata filled as `_populate_metadata` fills it."""
    from vllm.v1.worker.mamba_utils import MambaSpecDecodeGPUContext

    states = [s for _, conv, temporal in layers for s in (conv, temporal)]
    n = len(states)

    def meta(values, dtype):
        return torch.tensor(values, dtype=dtype)

    return MambaSpecDecodeGPUContext(
        state_base_addrs=meta([s.data_ptr() for s in states], torch.int64),
        state_block_strides=meta([s.stride(0) * s.element_size() for s in states], torch.int64),
        state_elem_sizes=meta([s.element_size() for s in states], torch.int32),
        state_inner_sizes=meta(
            [(1 if dim_first else s.stride(1)) if i % 2 == 0 else s[0].numel() for i, s in enumerate(states)],
            torch.int64,
        ),
        state_conv_widths=meta([(s.size(2) if dim_first else s.size(1)) if i % 2 == 0 else 0
                                for i, s in enumerate(states)], torch.int32),
        state_group_indices=meta([0 if i < n // 2 else 1 for i in range(n)], torch.int32),
        state_dim_row_count=meta([s.size(1) if dim_first and i % 2 == 0 else 0 for i, s in enumerate(states)],
                                 torch.int32),
        state_dim_row_stride=meta([s.stride(1) * s.element_size() if dim_first and i % 2 == 0 else 0
                                   for i, s in enumerate(states)], torch.int64),
        block_size=BLOCK,
        num_states=n,
        mamba_group_ids=[0, 1],
        num_groups=2,
        num_accepted_tokens_out=torch.zeros(max_reqs, dtype=torch.int32),
        block_table_ptrs=meta([t.data_ptr() for t in tables], torch.int64),
        aligned_index_block_table_ptrs=meta([t.data_ptr() for t in tables], torch.int64),
        block_table_stride_req=tables[0].stride(0),
        aligned_state_indices=torch.full((2, max_reqs, 3), -7, dtype=torch.int32),
        is_initialized=True,
    )


@pytest.fixture
def layout(monkeypatch):
    """Set the conv state layout vLLM's launches read (VLLM_SSM_CONV_STATE_LAYOUT, cached)."""
    from vllm.v1.worker import mamba_utils

    def set_layout(dim_first: bool):
        monkeypatch.setattr(mamba_utils, "is_conv_state_dim_first", lambda: dim_first)

    return set_layout


def _setup(dtype, dim_first, num_reqs, seed):
    """Two groups (two layers each), their block tables: distinct block ids per request."""
    layers = [_layer(dtype, dim_first, seed + i) for i in range(4)]
    rng = random.Random(seed)
    tables = []
    for _ in range(2):
        ids = rng.sample(range(NUM_BLOCKS), num_reqs * MAX_COLS)
        tables.append(torch.tensor(ids, dtype=torch.int32).view(num_reqs, MAX_COLS))
    # group 0 holds layers 0, 1; group 1 layers 2, 3 (as _context's group indices say)
    return layers, tables, _context(layers, tables, dim_first, num_reqs)


def _reference_copy(layers, tables, req, src_col, dst_col, bias, dim_first, before):
    """Element by element, from the saved states `before` (the copy is memmove-safe)."""
    for li, (_, conv, temporal) in enumerate(layers):
        bt = tables[li // 2][req].tolist()
        old_conv, old_temporal = before[li]
        src, dst = bt[src_col], bt[dst_col]
        for t in range(WIDTH - bias):
            for d in range(DIM):
                if dim_first:
                    conv[dst, d, t] = old_conv[src, d, t + bias]
                else:
                    conv[dst, t, d] = old_conv[src, t + bias, d]
        for a in range(TEMPORAL[0]):
            for b in range(TEMPORAL[1]):
                for c in range(TEMPORAL[2]):
                    temporal[dst, a, b, c] = old_temporal[bt[src_col + bias], a, b, c]


def _snapshot(layers):
    return [(conv.clone(), temporal.clone()) for _, conv, temporal in layers]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim_first", [False, True])
def test_precopy(dtype, dim_first, layout):
    layout(dim_first)
    num_reqs = 10
    layers, tables, ctx = _setup(dtype, dim_first, num_reqs, seed=1)
    expect_layers = [(raw.clone(),) for raw, _, _ in layers]
    expect_layers_before = [(raw.clone(),) for raw, _, _ in layers]
    rng = random.Random(2)
    src = [rng.choice([-1, 3, 5]) for _ in range(num_reqs)]
    dst = [s if i % 4 == 0 else rng.randrange(MAX_COLS - 4) for i, s in enumerate(src)]
    bias = [rng.randrange(3) for _ in range(num_reqs)]  # accepted tokens - 1, k = 3
    src[1], dst[1], bias[1] = 2, 2, 1  # same column: nothing moves
    src[2], dst[2] = 4, 4 + 1
    # the reference, on copies laid out the same way
    ref = [(raw, *_views(raw, dim_first)) for (raw,) in expect_layers]
    before = _snapshot(ref)
    for i in range(num_reqs):
        if src[i] >= 0 and src[i] != dst[i]:
            _reference_copy(ref, tables, i, src[i], dst[i], bias[i], dim_first, before)
    ctx.run_fused_precopy(
        num_reqs=num_reqs,
        state_idx_gpu=torch.tensor(dst, dtype=torch.int32),
        src_col_gpu=torch.tensor(src, dtype=torch.int32),
        token_bias_gpu=torch.tensor(bias, dtype=torch.int32),
        idx_mapping=None,
    )
    for (raw, _, _), (expected, _, _) in zip(layers, ref):
        assert torch.equal(raw, expected)  # bit for bit, padding and other blocks untouched
    assert any(not torch.equal(raw, old) for (raw, _, _), (old,) in zip(layers, expect_layers_before))


def _views(raw, dim_first):
    page = raw.numel() // NUM_BLOCKS
    conv_n = WIDTH * DIM
    if dim_first:
        conv = raw.as_strided((NUM_BLOCKS, DIM, WIDTH), (page, WIDTH, 1))
    else:
        conv = raw.as_strided((NUM_BLOCKS, WIDTH, DIM), (page, DIM, 1))
    temporal = raw.as_strided((NUM_BLOCKS, *TEMPORAL), (page, TEMPORAL[1] * TEMPORAL[2], TEMPORAL[2], 1), conv_n)
    return conv, temporal


def _post_decision(num_computed, num_scheduled, num_draft, num_accepted, src):
    """vLLM's post-process decision for one request: (copy?, dst column, bias, reset count?)."""
    running = num_computed + num_scheduled - num_draft
    new_computed = running + num_accepted - 1
    aligned = new_computed // BLOCK * BLOCK
    if aligned < running:
        return False, None, None, False
    bias, dst = aligned - running, aligned // BLOCK - 1
    return not (src == dst and bias == 0), dst, bias, src == dst


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim_first", [False, True])
def test_postprocess(dtype, dim_first, layout):
    layout(dim_first)
    num_reqs, k = 24, 3
    layers, tables, ctx = _setup(dtype, dim_first, num_reqs, seed=3)
    rng = random.Random(4)
    rows = []
    for i in range(num_reqs):
        num_computed = rng.randrange(0, 24)
        num_draft = rng.choice([0, k, k, k])
        num_scheduled = 1 + num_draft if i % 3 else rng.randrange(1 + num_draft, 12)
        num_accepted = rng.randrange(1, num_draft + 2)
        src = -(-(num_computed + num_scheduled) // BLOCK) - 1  # preprocess's running column
        rows.append((num_computed, num_scheduled, num_draft, num_accepted, src))
    decisions = [_post_decision(*r) for r in rows]
    seen = {(c, d == r[4], b) for (c, d, b, _), r in zip(decisions, rows) if d is not None}
    assert {(True, False), (True, True), (False, True)} <= {(c, same) for c, same, _ in seen}
    ref = [(raw.clone(), *_views(raw.clone(), dim_first)) for raw, _, _ in layers]
    ref = [(r[0], *_views(r[0], dim_first)) for r in ref]
    before = _snapshot(ref)
    expected_out = [r[3] for r in rows]
    for i, ((copy, dst, bias, reset), r) in enumerate(zip(decisions, rows)):
        if copy:
            _reference_copy(ref, tables, i, r[4], dst, bias, dim_first, before)
        if reset:
            expected_out[i] = 1
    cols = list(zip(*rows))
    ctx.run_fused_postprocess(
        num_reqs=num_reqs,
        num_accepted_tokens_gpu=torch.tensor(cols[3], dtype=torch.int32),
        mamba_state_idx_gpu=torch.tensor(cols[4], dtype=torch.int32),
        num_scheduled_tokens_gpu=torch.tensor(cols[1], dtype=torch.int32),
        num_computed_tokens_gpu=torch.tensor(cols[0], dtype=torch.int32),
        num_draft_tokens_gpu=torch.tensor(cols[2], dtype=torch.int32),
    )
    for (raw, _, _), (expected, _, _) in zip(layers, ref):
        assert torch.equal(raw, expected)
    assert ctx.num_accepted_tokens_out.tolist() == expected_out
    print(f"[postprocess] {sum(d[0] for d in decisions)} of {num_reqs} requests copied")


def test_postprocess_precomputed_with_idx_mapping():
    """The V2 runner's launch: batch rows mapped to request slots (-1 skips), the
    post-step computed count given."""
    num_reqs = 6
    layers, tables, ctx = _setup(torch.float32, False, num_reqs, seed=5)
    mapping = torch.tensor([4, -1, 0, 2], dtype=torch.int32)
    # slot: (new computed, accepted, running column)
    slots = {4: (9, 3, 1), 0: (8, 2, 1), 2: (6, 2, 1)}  # slot 4 and 0 cross block 1's end
    num_accepted = torch.ones(num_reqs, dtype=torch.int32)
    state_idx = torch.zeros(num_reqs, dtype=torch.int32)
    new_computed = torch.zeros(num_reqs, dtype=torch.int32)
    for s, (n, a, c) in slots.items():
        new_computed[s], num_accepted[s], state_idx[s] = n, a, c
    ref = [(raw.clone(),) for raw, _, _ in layers]
    ref = [(r[0], *_views(r[0], False)) for r in ref]
    before = _snapshot(ref)
    expected = num_accepted.clone()
    for s, (n, a, c) in slots.items():
        copy, dst, bias, reset = _post_decision(n - a + 1, 0, 0, a, c)  # running = n - a + 1
        if copy:
            _reference_copy(ref, tables, s, c, dst, bias, False, before)
        if reset:
            expected[s] = 1
    ctx.num_accepted_tokens_out.copy_(num_accepted)
    from vllm.v1.worker import mamba_utils

    snapshot = num_accepted.clone()
    mamba_utils.postprocess_mamba_fused_kernel[(len(mapping), ctx.num_states, 16)](
        snapshot, state_idx, None, new_computed, None, ctx.block_table_ptrs, ctx.block_table_stride_req,
        ctx.state_base_addrs, ctx.state_block_strides, ctx.state_elem_sizes, ctx.state_inner_sizes,
        ctx.state_conv_widths, ctx.state_group_indices, ctx.state_dim_row_count, ctx.state_dim_row_stride,
        ctx.num_accepted_tokens_out, mapping, len(mapping), block_size=BLOCK, COPY_BLOCK_SIZE=1024,
        CONV_STATE_DIM_FIRST=False, HAS_IDX_MAPPING=True, PRECOMPUTED_NEW_COMPUTED=True, TEMPORAL_TILES=16,
    )
    for (raw, _, _), (r, _, _) in zip(layers, ref):
        assert torch.equal(raw, r)
    assert ctx.num_accepted_tokens_out.tolist() == expected.tolist()
    assert not torch.equal(layers[0][0], _setup(torch.float32, False, num_reqs, seed=5)[0][0][0])


def test_preprocess_align_v2():
    from vllm.v1.worker import mamba_utils

    mapping = torch.tensor([3, 0, 1], dtype=torch.int32)
    state_idx = torch.tensor([2, -1, 0, 5], dtype=torch.int32)
    num_accepted = torch.tensor([3, 1, 2, 1], dtype=torch.int32)
    num_computed = torch.tensor([11, 0, 4, 20], dtype=torch.int32)
    query_start = torch.tensor([0, 4, 9, 10], dtype=torch.int32)
    src_col = torch.full((4,), -9, dtype=torch.int32)
    src_off = torch.full((4,), -9, dtype=torch.int32)
    expected = {  # slot: (src col, src off, new state idx, num accepted)
        3: (5, 0, (20 + 4 + BLOCK - 1) // BLOCK - 1, 1),
        0: (2, 2, (11 + 5 + BLOCK - 1) // BLOCK - 1, 1),
        1: (-1, 0, (0 + 1 + BLOCK - 1) // BLOCK - 1, 1),
    }
    mamba_utils.preprocess_mamba_align_fused_kernel[(1,)](
        mapping, state_idx, num_computed, query_start, num_accepted, src_col, src_off, 3,
        BLOCK_SIZE=1024, MAMBA_BLOCK_SIZE=BLOCK,
    )
    for slot, (c, o, s, a) in expected.items():
        assert (src_col[slot], src_off[slot], state_idx[slot], num_accepted[slot]) == (c, o, s, a), slot
    # slot 3: column 5 -> 5 (no reset, accepted count kept); slot 0: 2 -> 3 (reset)
    assert expected[3][2] == 5 and num_accepted[2] == 2 and src_col[2] == -9


def test_aligned_state_indices_v2():
    num_reqs = 5
    _, tables, ctx = _setup(torch.float32, False, num_reqs, seed=7)
    seq_lens = torch.tensor([1, 4, 5, 9, 16], dtype=torch.int32)
    from vllm.v1.worker import mamba_utils

    # launched as compute_aligned_state_indices launches it (that method asserts a CUDA tensor)
    out = ctx.aligned_state_indices
    mamba_utils.get_aligned_state_indices_multi_group_kernel[(1,)](
        ctx.aligned_index_block_table_ptrs, seq_lens, out, ctx.block_table_stride_req, seq_lens.stride(0),
        out.stride(0), out.stride(1), out.stride(2), num_reqs, CACHE_BLOCK_SIZE=BLOCK, NUM_GROUPS=2,
        BLOCK_GROUPS=2, NUM_STATE_SLOTS=3, BLOCK_STATE_SLOTS=4, BLOCK_ROWS=32, num_warps=1,
    )
    for g in range(2):
        for r in range(num_reqs):
            first = max((int(seq_lens[r]) - 1) // BLOCK, 0)
            assert out[g, r].tolist() == tables[g][r, first : first + 3].tolist()
