"""Opt-in per-request YaRN factor: :class:`YarnFactorSelector`, the state it
shares with the rotary tables, the op that maps positions to table rows, and its checks.

With ``--logits-processors vllm_qwen3next.rope:YarnFactorSelector`` the rotary
module (``layers/rotary_embedding.py``) holds one table per factor of
``per_request_factors`` (1, 2, 4, ... up to ``factor``; factor 1 is plain rope)
and each request uses the smallest factor whose range
``original_max_position_embeddings * f`` covers prompt plus ``max_tokens``. The
selector is a logits processor only because that is the one vLLM 0.32 interface
that shows a plugin, in the worker, each request's sampling parameters and its
row in the batch; it leaves the logits alone.

Shapes: T = tokens, N = requests (sequences) in the batch.
"""

from typing import TYPE_CHECKING

import torch

from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

if TYPE_CHECKING:
    from vllm_qwen3next.layers.rotary_embedding import Qwen3NextRotaryEmbedding


class _SelectorState:
    """Shared, in one worker process, by the selector and the rotary tables.

    ``row_offsets`` [max_num_seqs + 1]: table offset of each batch row. Allocated
    once and written in place, so the forward pass always reads the same tensor.
    """

    def __init__(self):
        self.row_offsets: torch.Tensor | None = None
        self.tables: "Qwen3NextRotaryEmbedding | None" = None  # set by get_rotary_embedding

    def buffer(self, num_rows: int, device) -> torch.Tensor:
        if self.row_offsets is None:
            self.row_offsets = torch.zeros(num_rows + 1, dtype=torch.int64, device=device)
        return self.row_offsets


SELECTOR_STATE = _SelectorState()


class YarnFactorSelector(LogitsProcessor):
    """Opt-in per-request YaRN factor (pass it in ``logits_processors``).

    Records, per batch row, prompt length plus ``max_tokens`` and writes the
    offset of that request's table before each forward pass. The factor is
    fixed for the life of a request (its cached keys were rotated with it).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.max_model_len = vllm_config.model_config.max_model_len
        self.row_offsets = SELECTOR_STATE.buffer(vllm_config.scheduler_config.max_num_seqs, device)
        self.row_lengths: dict[int, int] = {}  # batch row -> prompt + max_tokens

    def is_argmax_invariant(self) -> bool:
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        lengths = self.row_lengths
        for index in batch_update.removed:
            lengths.pop(index, None)
        for index, params, prompt_ids, _ in batch_update.added:
            max_tokens = params.max_tokens if params.max_tokens is not None else self.max_model_len
            lengths[index] = (len(prompt_ids) if prompt_ids is not None else self.max_model_len) + max_tokens
        for a, b, direction in batch_update.moved:
            entry_a, entry_b = lengths.pop(a, None), lengths.pop(b, None)
            if entry_a is not None:
                lengths[b] = entry_a
            if entry_b is not None and direction == MoveDirectionality.SWAP:
                lengths[a] = entry_b
        tables = SELECTOR_STATE.tables
        offsets = [0] * batch_update.batch_size
        if tables is not None:
            for index, n in lengths.items():
                if index < batch_update.batch_size:
                    offsets[index] = tables.table_offsets[tables.table_for_length(n)]
        self.row_offsets[: len(offsets)].copy_(torch.tensor(offsets, dtype=torch.int64), non_blocking=True)


# The documented name, and this module's (a class passed directly has the latter).
SELECTOR_NAMES = ("vllm_qwen3next.rope:YarnFactorSelector", f"{__name__}:YarnFactorSelector")


def selector_requested(model_config) -> bool:
    """Whether ``logits_processors`` names :class:`YarnFactorSelector`."""
    for proc in model_config.logits_processors or ():
        name = proc if isinstance(proc, str) else f"{proc.__module__}:{proc.__qualname__}"
        if name in SELECTOR_NAMES:
            return True
    return False


def _fail(message: str) -> None:
    raise ValueError(f"Invalid Qwen3-Next rope settings (logits_processors): {message}")


def check_selector_settings(rope_parameters: dict, vllm_config) -> None:
    """What the selector needs of the rope settings and the cache (at settings time)."""
    if rope_parameters["rope_type"] != "yarn":
        _fail("YarnFactorSelector needs rope_type 'yarn' (it picks among YaRN factors)")
    if vllm_config.cache_config.enable_prefix_caching:
        _fail(
            "YarnFactorSelector needs enable_prefix_caching=False: cached blocks would "
            "carry keys rotated with another request's factor"
        )


def check_no_cuda_graphs() -> None:
    """What the selector needs of the compilation (when the tables are built)."""
    from vllm.config import CUDAGraphMode, get_current_vllm_config

    mode = get_current_vllm_config().compilation_config.cudagraph_mode
    if mode is not None and mode != CUDAGraphMode.NONE:
        _fail(
            f"YarnFactorSelector needs enforce_eager=True (cudagraph_mode is {mode.name}): "
            "a captured graph would replay the table rows of the batch it was captured with"
        )


def qwen3next_yarn_table_rows(positions: torch.Tensor) -> torch.Tensor:
    """positions [T] -> table rows [T]: position plus the offset of its request's table.

    Tokens come in batch-row order; ``query_start_loc`` [N + 1] of the attention
    metadata gives each token its row."""
    from vllm.forward_context import get_forward_context

    attn_metadata = get_forward_context().attn_metadata
    if not attn_metadata:  # profiling / dummy run
        return positions.clone()
    if isinstance(attn_metadata, list):
        raise NotImplementedError("per-request YaRN factors with micro-batching")
    query_start_loc = next(
        md.query_start_loc for md in attn_metadata.values() if getattr(md, "query_start_loc", None) is not None
    )
    token = torch.arange(positions.shape[0], device=positions.device, dtype=query_start_loc.dtype)
    rows = torch.searchsorted(query_start_loc[1:], token, right=True)  # [T], padding -> N
    row_offsets = SELECTOR_STATE.row_offsets
    num_reqs = query_start_loc.shape[0] - 1
    offsets = torch.where(rows < num_reqs, row_offsets[rows.clamp(max=num_reqs - 1)], 0)
    return positions + offsets


def _table_rows_fake(positions: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(positions)


# Reads the batch metadata at run time, so it stays opaque to torch.compile.
def _register_ops() -> None:
    from vllm.utils.torch_utils import direct_register_custom_op

    direct_register_custom_op(
        op_name="qwen3next_yarn_table_rows",
        op_func=qwen3next_yarn_table_rows,
        fake_impl=_table_rows_fake,
    )


_register_ops()
