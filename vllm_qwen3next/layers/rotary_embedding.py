"""The rotary embedding of Qwen3-Next: the cos / sin tables and the module the
attention layers (target and MTP draft) use. The settings it takes are those of
``rope_config.rope_parameters_for``.

YaRN as transformers defines it (``_compute_yarn_parameters``): frequencies over
the rotated dims only (``head_dim * partial_rotary_factor``), the correction
range from ``beta_fast`` / ``beta_slow`` (32 / 1) with ``truncate``, and the
attention factor ``0.1 * ln(factor) + 1`` (or ``attention_factor``, or the
``mscale`` / ``mscale_all_dim`` ratio) multiplied into cos and sin. vLLM's
``YaRNScalingRotaryEmbedding`` computes the same values but sizes its table
``original_max_position_embeddings * factor``; ours covers ``max_model_len``
too, so positions past that (allowed by ``VLLM_ALLOW_LONG_MAX_MODEL_LEN``) stay
inside the table. With the per-request selector (``yarn_selector.py``) one table
per factor is stacked along P.

Shapes: T = tokens, P = table rows, Dr = rotated dims.
"""

import json
import math

import torch

from vllm.logger import init_logger
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

from vllm_qwen3next.rope_config import OWN_KEYS
from vllm_qwen3next.yarn_selector import SELECTOR_STATE, check_no_cuda_graphs

# Under "vllm." so that vLLM's log handler prints our INFO lines.
logger = init_logger(f"vllm.{__name__}")


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_inv_freq(params: dict, rotary_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [Dr/2] and the factor on cos / sin, as transformers'
    ``_compute_default_rope_parameters`` / ``_compute_yarn_parameters`` give them
    (float32, CPU)."""
    base = params["rope_theta"]
    pos_freqs = base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float) / rotary_dim)
    if params["rope_type"] == "default":
        return 1.0 / pos_freqs, 1.0

    factor = params["factor"]
    original = params["original_max_position_embeddings"]
    attention_factor = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return rotary_dim * math.log(original / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp  # 1 for the high-frequency dims kept as they are
    inv_freq = 1.0 / (factor * pos_freqs) * (1 - extrapolation) + 1.0 / pos_freqs * extrapolation
    return inv_freq, float(attention_factor)


def cos_sin_table(params: dict, rotary_dim: int, num_positions: int) -> torch.Tensor:
    """[P, Dr]: cos then sin of every position, times the attention factor (float32, CPU)."""
    inv_freq, attention_factor = rope_inv_freq(params, rotary_dim)
    freqs = torch.arange(num_positions, dtype=torch.float)[:, None] * inv_freq[None, :]
    return torch.cat((freqs.cos() * attention_factor, freqs.sin() * attention_factor), dim=-1)


def _factor_params(params: dict, factor: float) -> dict:
    if factor == 1:
        return {"rope_type": "default", **{k: params[k] for k in OWN_KEYS}}
    return {k: v for k, v in params.items() if k != "per_request_factors"} | {"factor": factor}


class Qwen3NextRotaryEmbedding(RotaryEmbedding):
    """vLLM's rotary embedding (NeoX style, partial; its CPU / CUDA kernels) over
    our table. Several tables are stacked along P in the per-request mode; a
    token then reads row ``offset[table of its request] + position``."""

    def __init__(
        self,
        head_size: int,
        rope_parameters: dict,
        max_position: int,
        dtype: torch.dtype,
    ) -> None:
        self.rope_parameters = rope_parameters
        self.num_positions = max_position
        factors = rope_parameters.get("per_request_factors")
        if factors:
            check_no_cuda_graphs()
            original = rope_parameters["original_max_position_embeddings"]
            # Table i serves requests up to original * factors[i] tokens; the last one all the rest.
            lengths = [min(int(original * f), max_position) for f in factors[:-1]] + [max_position]
            self.factors = tuple(factors)
        else:
            lengths, self.factors = [max_position], (None,)
        self.table_lengths = tuple(lengths)
        self.table_offsets = tuple(sum(lengths[:i]) for i in range(len(lengths)))
        rotary_dim = int(head_size * rope_parameters["partial_rotary_factor"])
        super().__init__(
            head_size, rotary_dim, sum(lengths), rope_parameters["rope_theta"], True, dtype
        )

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        # Computed on the CPU in float32 as transformers does, then moved.
        if self.factors == (None,):
            tables = [cos_sin_table(self.rope_parameters, self.rotary_dim, self.num_positions)]
        else:
            tables = [
                cos_sin_table(_factor_params(self.rope_parameters, f), self.rotary_dim, n)
                for f, n in zip(self.factors, self.table_lengths)
            ]
        return torch.cat(tables).to(torch.get_default_device())

    def table_for_length(self, num_tokens: int) -> int:
        """Index of the smallest-factor table whose range covers ``num_tokens``."""
        for i, n in enumerate(self.table_lengths[:-1]):
            if num_tokens <= n:
                return i
        return len(self.table_lengths) - 1

    def forward_native(self, positions, query, key=None):
        return super().forward_native(self._table_rows(positions), query, key)

    def forward_cuda(self, positions, query, key=None):
        return super().forward_cuda(self._table_rows(positions), query, key)

    def forward_cpu(self, positions, query, key=None):
        return super().forward_cpu(self._table_rows(positions), query, key)

    def _table_rows(self, positions: torch.Tensor) -> torch.Tensor:
        if len(self.factors) == 1:
            return positions
        return torch.ops.vllm.qwen3next_yarn_table_rows(positions)


_ROTARY_EMBEDDINGS: dict[tuple, Qwen3NextRotaryEmbedding] = {}


def get_rotary_embedding(
    head_size: int, rope_parameters: dict, max_position: int, dtype: torch.dtype | None = None
) -> Qwen3NextRotaryEmbedding:
    """One module (one table) per distinct setting, shared by all layers like vLLM's ``get_rope``."""
    dtype = dtype or torch.get_default_dtype()
    key = (head_size, json.dumps(rope_parameters, sort_keys=True), max_position, dtype)
    if key not in _ROTARY_EMBEDDINGS:
        module = Qwen3NextRotaryEmbedding(head_size, rope_parameters, max_position, dtype)
        _ROTARY_EMBEDDINGS[key] = module
        if rope_parameters.get("per_request_factors"):
            SELECTOR_STATE.tables = module
        logger.info(
            "vllm_qwen3next: rope %s, %d of %d dims rotated, table of %d positions",
            json.dumps(rope_parameters, sort_keys=True), module.rotary_dim, head_size, module.max_position_embeddings,
        )
    return _ROTARY_EMBEDDINGS[key]


def rotary_table_positions(config, max_model_len: int) -> int:
    """Rows each table needs: every position below ``max_model_len`` (and at least
    what vLLM's own tables hold)."""
    return max(max_model_len, config.max_position_embeddings)
