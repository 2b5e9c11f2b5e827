"""vLLM 0.32 for CPU: the hybrid-state block copies of prefix caching under speculative decoding.

With prefix caching ("align" mode) a hybrid model keeps each request's GDN states in the
cache block of its last computed token, so a later request can start from a cached block.
Under speculative decoding vLLM moves those states between blocks with fused Triton
kernels (`vllm/v1/worker/mamba_utils.py`):

- `precopy_mamba_align_fused_kernel` (V1 and V2 runner, before the forward pass): the
  running state moves from the previous block column to the new one, taking the
  accepted draft position's temporal state and shifting the conv window by it;
- `postprocess_mamba_fused_kernel` (V1 and V2, after sampling): when the accepted tokens
  end past a block boundary, the state at the boundary is saved into that block;
- `preprocess_mamba_align_fused_kernel` and `get_aligned_state_indices_multi_group_kernel`
  (V2 runner only): the pre-copy's source columns, and the per-step state slots.

vLLM's CPU platform swaps only `batch_memcpy_kernel` (the path without speculative
decoding) for C++ (`CpuPlatform.register_triton_kernel_overrides`); the four above stay
plain Python functions that the runner launches as `kernel[grid](...)`, which fails
("'function' object is not subscriptable"). Here each is written in plain PyTorch,
vectorised over the requests (one Python step per state tensor), on the kernels' own
arguments: raw addresses of the state tensors and block tables, read through
`torch.frombuffer` views, exactly the bytes the Triton kernels copy.

`install()` registers them through `vllm.triton_utils.dispatcher` only where vLLM has
only the Triton ones (no Triton CPU backend, nothing registered yet). It runs in the
worker, from the model's constructor, after the platform's own overrides.
"""

import ctypes

import torch

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")

MODULE = "vllm.v1.worker.mamba_utils"


def _memory(addr: int, nbytes: int) -> torch.Tensor:
    """The ``nbytes`` bytes at address ``addr`` as a writable uint8 tensor (no copy)."""
    return torch.frombuffer((ctypes.c_uint8 * max(nbytes, 1)).from_address(addr), dtype=torch.uint8)


def _block_ids(block_table_ptrs, group: int, stride: int, rows: torch.Tensor, cols: torch.Tensor):
    """``block_table[group][rows, cols]`` (int32 tables of row stride ``stride``), as int64."""
    flat = rows * stride + cols
    if flat.numel() == 0:
        return flat
    table = _memory(int(block_table_ptrs[group]), (int(flat.max()) + 1) * 4).view(torch.int32)
    return table[flat].long()


def _copy_state(meta: dict, s: int, rows, src_cols, dst_cols, token_bias, dim_first: bool) -> None:
    """The copy body shared by the pre-copy and the post-process (vLLM's
    ``_copy_mamba_state_block``), for state tensor ``s`` and the requests ``rows``:

    - conv state: ``state[bt[src], token_bias:] -> state[bt[dst], :width - token_bias]``
    - temporal state: ``state[bt[src + token_bias]] -> state[bt[dst]]``
    """
    if rows.numel() == 0:
        return
    base = int(meta["state_base_addrs"][s])
    block_stride = int(meta["state_block_strides"][s])
    elem = int(meta["state_elem_sizes"][s])
    inner = int(meta["state_inner_sizes"][s])
    width = int(meta["state_conv_widths"][s])
    group = int(meta["state_group_indices"][s])
    bt = meta["block_table_ptrs"], group, int(meta["block_table_stride_req"])
    dst = _block_ids(*bt, rows, dst_cols)
    if width == 0:  # temporal state: a whole block, from the accepted position's block
        src = _block_ids(*bt, rows, src_cols + token_bias)
        size = inner * elem
        top = int(torch.maximum(src, dst).max())
        state = _memory(base, top * block_stride + size).as_strided((top + 1, size), (block_stride, 1))
        state[dst] = state[src]  # the gather copies first: src == dst is safe
        return
    src = _block_ids(*bt, rows, src_cols)
    top = int(torch.maximum(src, dst).max())
    # one (request, destination token) pair per token that moves
    token = torch.arange(width)
    keep = token[None, :] < width - token_bias[:, None]
    req, tok = keep.nonzero(as_tuple=True)
    src_tok = tok + token_bias[req]
    if dim_first:  # (dim, width) per block: token t of every dim row
        dim_rows = int(meta["state_dim_row_count"][s])
        row_stride = int(meta["state_dim_row_stride"][s])
        extent = (dim_rows - 1) * row_stride + width * elem
        state = _memory(base, top * block_stride + extent).as_strided(
            (top + 1, dim_rows, width, elem), (block_stride, row_stride, elem, 1)
        )
        state[dst[req], :, tok] = state[src[req], :, src_tok]
    else:  # (width, dim) per block, dim contiguous: one token is inner * elem bytes
        token_bytes = inner * elem
        state = _memory(base, top * block_stride + width * token_bytes).as_strided(
            (top + 1, width, token_bytes), (block_stride, token_bytes, 1)
        )
        state[dst[req], tok] = state[src[req], src_tok]


def _copy_states(meta: dict, num_states: int, rows, src_cols, dst_cols, token_bias, dim_first) -> None:
    for s in range(num_states):
        _copy_state(meta, s, rows, src_cols, dst_cols, token_bias, dim_first)


def _request_slots(idx_mapping, num_reqs: int, has_idx_mapping: bool) -> torch.Tensor:
    if has_idx_mapping:
        slots = idx_mapping[:num_reqs].long()
        return slots[slots >= 0]
    return torch.arange(num_reqs)


def postprocess_mamba_fused_kernel(
    num_accepted_tokens_ptr, mamba_state_idx_ptr, num_scheduled_tokens_ptr, num_computed_tokens_ptr,
    num_draft_tokens_ptr, block_table_ptrs_ptr, block_table_stride_req, state_base_addrs_ptr,
    state_block_strides_ptr, state_elem_sizes_ptr, state_inner_sizes_ptr, state_conv_widths_ptr,
    state_group_indices_ptr, state_dim_row_count_ptr, state_dim_row_stride_ptr,
    num_accepted_tokens_out_ptr, idx_mapping_ptr, num_reqs, block_size, COPY_BLOCK_SIZE=None,  # noqa: N803
    CONV_STATE_DIM_FIRST=False, HAS_IDX_MAPPING=False, PRECOMPUTED_NEW_COMPUTED=False,  # noqa: N803
    TEMPORAL_TILES=1,  # noqa: N803
) -> None:
    """After sampling: where the accepted tokens end at or past a block boundary that the
    running state had not reached, save the state at the boundary into the block ending
    there (vLLM's Triton kernel of the same name; grid (requests, states) as one call)."""
    req = _request_slots(idx_mapping_ptr, num_reqs, HAS_IDX_MAPPING)
    num_accepted = num_accepted_tokens_ptr[req].long()
    src = mamba_state_idx_ptr[req].long()
    if PRECOMPUTED_NEW_COMPUTED:
        new_computed = num_computed_tokens_ptr[req].long()
        running = new_computed - num_accepted + 1
    else:
        running = (num_computed_tokens_ptr[req].long() + num_scheduled_tokens_ptr[req].long()
                   - num_draft_tokens_ptr[req].long())
        new_computed = running + num_accepted - 1
    aligned = new_computed // block_size * block_size
    needs_copy = aligned >= running
    token_bias = aligned - running
    dst = aligned // block_size - 1
    same_block = needs_copy & (src == dst)
    num_accepted_tokens_out_ptr[req[same_block]] = 1
    copy = needs_copy & ~(same_block & (token_bias == 0))
    meta = _meta(locals())
    _copy_states(meta, state_base_addrs_ptr.numel(), req[copy], src[copy], dst[copy], token_bias[copy],
                 CONV_STATE_DIM_FIRST)


def precopy_mamba_align_fused_kernel(
    mamba_state_idx_ptr, src_col_ptr, token_bias_ptr, block_table_ptrs_ptr, block_table_stride_req,
    state_base_addrs_ptr, state_block_strides_ptr, state_elem_sizes_ptr, state_inner_sizes_ptr,
    state_conv_widths_ptr, state_group_indices_ptr, state_dim_row_count_ptr, state_dim_row_stride_ptr,
    idx_mapping_ptr, num_reqs, COPY_BLOCK_SIZE=None, CONV_STATE_DIM_FIRST=False,  # noqa: N803
    HAS_IDX_MAPPING=True, TEMPORAL_TILES=1,  # noqa: N803
) -> None:
    """Before the forward pass: move each request's running state from its previous block
    column to its new one (the accepted position's temporal state, the conv window shifted
    by it), where the column changed (vLLM's Triton kernel of the same name)."""
    req = _request_slots(idx_mapping_ptr, num_reqs, HAS_IDX_MAPPING)
    src = src_col_ptr[req].long()
    dst = mamba_state_idx_ptr[req].long()
    copy = (src >= 0) & (src != dst)
    meta = _meta(locals())
    _copy_states(meta, state_base_addrs_ptr.numel(), req[copy], src[copy], dst[copy],
                 token_bias_ptr[req[copy]].long(), CONV_STATE_DIM_FIRST)


def preprocess_mamba_align_fused_kernel(
    idx_mapping_ptr, state_idx_ptr, num_computed_tokens_ptr, query_start_loc_ptr, num_accepted_tokens_ptr,
    src_col_ptr, src_off_ptr, num_reqs, BLOCK_SIZE=None, MAMBA_BLOCK_SIZE=None,  # noqa: N803
) -> None:
    """V2 runner: store the pre-copy's source column and accepted-token bias, advance the
    running block column, and reset the accepted count where the column changed."""
    req = idx_mapping_ptr[:num_reqs].long()
    state_idx = state_idx_ptr[req].long()
    num_accepted = num_accepted_tokens_ptr[req].long()
    src_col_ptr[req] = state_idx.to(src_col_ptr.dtype)
    src_off_ptr[req] = num_accepted.sub(1).clamp_min(0).to(src_off_ptr.dtype)
    query_lens = (query_start_loc_ptr[1 : num_reqs + 1] - query_start_loc_ptr[:num_reqs]).long()
    computed_after = num_computed_tokens_ptr[req].long() + query_lens
    new_state_idx = (computed_after + MAMBA_BLOCK_SIZE - 1) // MAMBA_BLOCK_SIZE - 1
    state_idx_ptr[req] = new_state_idx.to(state_idx_ptr.dtype)
    reset = (state_idx >= 0) & (state_idx != new_state_idx)
    num_accepted_tokens_ptr[req[reset]] = 1


def get_aligned_state_indices_multi_group_kernel(
    block_table_ptrs_ptr, seq_lens_ptr, state_indices_ptr, block_table_stride_req, seq_lens_stride,
    state_indices_stride_0, state_indices_stride_1, state_indices_stride_2, num_requests,
    CACHE_BLOCK_SIZE, NUM_GROUPS, BLOCK_GROUPS=None, NUM_STATE_SLOTS=1, BLOCK_STATE_SLOTS=None,  # noqa: N803
    BLOCK_ROWS=None, **launch_options,  # noqa: N803 (num_warps)
) -> None:
    """V2 runner: per group and request, the ``NUM_STATE_SLOTS`` block ids from the block of
    the last token (``(seq_len - 1) // block_size``) on."""
    if num_requests == 0:
        return
    rows = torch.arange(num_requests)
    seq_lens = seq_lens_ptr.as_strided((num_requests,), (seq_lens_stride,)).long()
    first = ((seq_lens - 1) // CACHE_BLOCK_SIZE).clamp_min(0)
    out = state_indices_ptr.as_strided(
        (NUM_GROUPS, num_requests, NUM_STATE_SLOTS),
        (state_indices_stride_0, state_indices_stride_1, state_indices_stride_2),
    )
    slots = torch.arange(NUM_STATE_SLOTS)
    cols = (first[:, None] + slots[None, :]).flatten()
    for g in range(NUM_GROUPS):
        ids = _block_ids(block_table_ptrs_ptr, g, int(block_table_stride_req), rows.repeat_interleave(NUM_STATE_SLOTS), cols)
        out[g] = ids.view(num_requests, NUM_STATE_SLOTS).to(out.dtype)


def _meta(args: dict) -> dict:
    """The state-layout arguments, by the names ``_copy_state`` reads."""
    return {
        "state_base_addrs": args["state_base_addrs_ptr"],
        "state_block_strides": args["state_block_strides_ptr"],
        "state_elem_sizes": args["state_elem_sizes_ptr"],
        "state_inner_sizes": args["state_inner_sizes_ptr"],
        "state_conv_widths": args["state_conv_widths_ptr"],
        "state_group_indices": args["state_group_indices_ptr"],
        "state_dim_row_count": args["state_dim_row_count_ptr"],
        "state_dim_row_stride": args["state_dim_row_stride_ptr"],
        "block_table_ptrs": args["block_table_ptrs_ptr"],
        "block_table_stride_req": args["block_table_stride_req"],
    }


KERNELS = {
    f"{MODULE}.postprocess_mamba_fused_kernel": postprocess_mamba_fused_kernel,
    f"{MODULE}.precopy_mamba_align_fused_kernel": precopy_mamba_align_fused_kernel,
    f"{MODULE}.preprocess_mamba_align_fused_kernel": preprocess_mamba_align_fused_kernel,
    f"{MODULE}.get_aligned_state_indices_multi_group_kernel": get_aligned_state_indices_multi_group_kernel,
}


def triton_only(name: str) -> bool:
    """True where vLLM has only the Triton kernel ``name``: no Triton backend for this
    platform and no platform override registered (the placeholder is a plain function)."""
    from vllm.triton_utils import HAS_TRITON, dispatcher

    if HAS_TRITON or name in dispatcher._registry:
        return False
    from vllm.v1.worker import mamba_utils

    return not hasattr(getattr(mamba_utils, name.rsplit(".", 1)[1]), "__getitem__")


def install() -> None:
    """Register the CPU stand-ins for the state-copy kernels that vLLM has only in Triton."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.triton_utils import dispatcher

    missing = {name: impl for name, impl in KERNELS.items() if triton_only(name)}
    if not missing:
        return
    dispatcher.register_kernels(missing)
    logger.info(
        "vllm_qwen3next: CPU stand-ins for vLLM's Triton-only hybrid-state copy kernels "
        "(prefix caching with speculative decoding): %s",
        ", ".join(name.rsplit(".", 1)[1] for name in missing),
    )
