"""Rotary position embedding of Qwen3-Next: the rope settings, their checks, and
the rotary-embedding module the attention layers (target and MTP draft) use.

Settings. The checkpoint's own ``rope_theta`` and ``partial_rotary_factor`` come
from config.json in either style (top level beside ``rope_scaling``, as in the
released model, or inside transformers-5 ``rope_parameters``). vLLM 0.32 applies
a dict-valued ``hf_overrides`` entry with ``setattr(hf_config, key, value)``, and
transformers 5 maps ``rope_scaling`` onto ``rope_parameters``: an override that
holds only the YaRN keys replaces the whole dict and drops theta and the partial
factor (the built-in then rotates the whole head with theta 10000). So
:func:`rope_parameters_for` re-reads config.json and merges the override on top.

Frequencies. YaRN as transformers defines it (``_compute_yarn_parameters``):
frequencies over the rotated dims only (``head_dim * partial_rotary_factor``),
the correction range from ``beta_fast`` / ``beta_slow`` (32 / 1) with
``truncate``, and the attention factor ``0.1 * ln(factor) + 1`` (or
``attention_factor``, or the ``mscale`` / ``mscale_all_dim`` ratio) multiplied
into cos and sin. vLLM's ``YaRNScalingRotaryEmbedding`` computes the same values
but sizes its table ``original_max_position_embeddings * factor``; ours covers
``max_model_len`` too, so positions past that (allowed by
``VLLM_ALLOW_LONG_MAX_MODEL_LEN``) stay inside the table.

Per-request factors (opt-in). With :class:`YarnFactorSelector` in
``logits_processors``, the module holds one table per factor of
:func:`per_request_factors` (1, 2, 4, ... up to ``factor``; factor 1 is plain
rope) and each request uses the smallest factor whose range
``original_max_position_embeddings * f`` covers prompt plus ``max_tokens``. The
selector is a logits processor only because that is the one vLLM 0.32 interface
that shows a plugin, in the worker, each request's sampling parameters and its
row in the batch; it leaves the logits alone.

Shapes: T = tokens, R = requests in the batch, P = table rows, Dr = rotated dims.
"""

import functools
import json
import math
from pathlib import Path

import torch

from vllm.logger import init_logger
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

# Under "vllm." so that vLLM's log handler prints our INFO lines.
logger = init_logger(f"vllm.{__name__}")

ROPE_TYPES = ("default", "yarn")
YARN_REQUIRED = ("factor", "original_max_position_embeddings")
YARN_OPTIONAL = ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")
OWN_KEYS = ("rope_theta", "partial_rotary_factor")
# transformers' defaults: PreTrainedConfig.default_theta and Qwen3NextConfig's partial factor.
DEFAULT_ROPE_THETA = 10000.0
DEFAULT_PARTIAL_ROTARY_FACTOR = 0.25
OVERRIDE_KEYS = ("rope_scaling", "rope_parameters")


# --- settings -----------------------------------------------------------------


def _fail(source: str, message: str) -> None:
    raise ValueError(f"Invalid Qwen3-Next rope settings ({source}): {message}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rope_type(params: dict, source: str, name: str) -> str | None:
    """``rope_type``, or the legacy ``type``; None when neither is given."""
    rope_type, legacy = params.get("rope_type"), params.get("type")
    if rope_type is not None and legacy is not None and rope_type != legacy:
        _fail(source, f"{name}.rope_type ({rope_type!r}) and {name}.type ({legacy!r}) disagree")
    return rope_type if rope_type is not None else legacy


def checkpoint_rope_parameters(config_dict: dict) -> dict:
    """The rope settings a config.json declares, in either style, unstandardised
    (a missing ``original_max_position_embeddings`` stays missing)."""
    name = "rope_parameters" if config_dict.get("rope_parameters") else "rope_scaling"
    source = f"config.json {name}"
    scaling = config_dict.get(name) or {}
    if not isinstance(scaling, dict):
        _fail(source, f"must be an object, got {scaling!r}")
    params = {k: v for k, v in scaling.items() if k != "type"}
    rope_type = _rope_type(scaling, source, name)
    if rope_type is None and set(params) - set(OWN_KEYS):
        _fail(source, f"{name}.rope_type is missing")
    params["rope_type"] = rope_type or "default"
    params.setdefault("rope_theta", config_dict.get("rope_theta", DEFAULT_ROPE_THETA))
    params.setdefault(
        "partial_rotary_factor",
        config_dict.get("partial_rotary_factor", DEFAULT_PARTIAL_ROTARY_FACTOR),
    )
    return params


def merge_rope_parameters(own: dict, override: dict | None, source: str = "override") -> dict:
    """``override`` on top of the checkpoint's ``own`` settings.

    An override naming a ``rope_type`` replaces the scaling and keeps the
    checkpoint's theta and partial factor unless it sets them itself; one
    without a ``rope_type`` updates single keys of the checkpoint's settings.
    """
    if override is None:
        return dict(own)
    if not isinstance(override, dict):
        _fail(source, f"must be an object, got {override!r}")
    rope_type = _rope_type(override, source, source)
    update = {k: v for k, v in override.items() if k not in ("type", "rope_type")}
    if rope_type is None:
        return own | update
    return {k: own[k] for k in OWN_KEYS} | {"rope_type": rope_type} | update


def validate_rope_parameters(params: dict, head_dim: int, source: str = "rope_scaling") -> None:
    """Raise a ValueError naming the field when ``params`` cannot be served."""
    rope_type = params.get("rope_type")
    if rope_type not in ROPE_TYPES:
        _fail(source, f"rope_type {rope_type!r} is not supported; expected one of {list(ROPE_TYPES)}")
    allowed = {"rope_type", *OWN_KEYS} | (set(YARN_REQUIRED + YARN_OPTIONAL) if rope_type == "yarn" else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        _fail(source, f"unknown keys {unknown} for rope_type {rope_type!r}; allowed: {sorted(allowed)}")

    theta = params["rope_theta"]
    if not _is_number(theta) or theta <= 1:
        _fail(source, f"rope_theta must be a number > 1, got {theta!r}")
    partial = params["partial_rotary_factor"]
    if not _is_number(partial) or not 0 < partial <= 1:
        _fail(source, f"partial_rotary_factor must be in (0, 1], got {partial!r}")
    rotary_dim = int(head_dim * partial)
    if rotary_dim < 2 or rotary_dim % 2:
        _fail(
            source,
            f"partial_rotary_factor {partial} rotates {rotary_dim} of head_dim {head_dim} dims; "
            "that must be an even number >= 2",
        )
    if rope_type != "yarn":
        return

    for key in YARN_REQUIRED:
        if params.get(key) is None:
            _fail(source, f"{key} is missing; rope_type 'yarn' needs {list(YARN_REQUIRED)}")
    factor = params["factor"]
    if not _is_number(factor) or factor <= 1:
        _fail(source, f"factor must be a number > 1, got {factor!r}")
    original = params["original_max_position_embeddings"]
    if not isinstance(original, int) or isinstance(original, bool) or original <= 0:
        _fail(source, f"original_max_position_embeddings must be a positive integer, got {original!r}")
    for key in ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
        value = params.get(key)
        if value is not None and (not _is_number(value) or value <= 0):
            _fail(source, f"{key} must be a number > 0, got {value!r}")
    if (params.get("beta_fast") or 32) <= (params.get("beta_slow") or 1):
        _fail(source, f"beta_fast ({params.get('beta_fast')}) must exceed beta_slow ({params.get('beta_slow')})")
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        _fail(source, f"truncate must be true or false, got {truncate!r}")


def resolve_rope_parameters(
    config_dict: dict,
    head_dim: int,
    override: dict | None = None,
    override_source: str = "hf_overrides['rope_scaling']",
) -> dict:
    """The rope settings to serve: config.json's own, an override merged on top, checked.
    Errors name the field and where it came from (config.json or ``override_source``)."""
    own = checkpoint_rope_parameters(config_dict)
    if override is None:
        source = "config.json " + ("rope_parameters" if config_dict.get("rope_parameters") else "rope_scaling")
    else:
        source = override_source
    params = merge_rope_parameters(own, override, source)
    validate_rope_parameters(params, head_dim, source)
    return params


@functools.lru_cache(maxsize=8)
def _read_config_json(path: str, revision: str | None) -> str | None:
    """config.json as text, from a local directory or the Hugging Face cache."""
    local = Path(path) / "config.json"
    if local.is_file():
        return local.read_text()
    try:
        from transformers import PretrainedConfig

        config_dict, _ = PretrainedConfig.get_config_dict(path, revision=revision)
    except Exception as e:  # noqa: BLE001 - any failure means "not readable"
        logger.warning("vllm_qwen3next: could not re-read config.json of %s: %s", path, e)
        return None
    return json.dumps(config_dict)


def _target_model_config(vllm_config):
    spec = vllm_config.speculative_config
    if spec is not None and spec.target_model_config is not None:
        return spec.target_model_config
    return vllm_config.model_config


def rope_parameters_for(vllm_config) -> dict:
    """The rope settings of the target model: the dict both the target's and the
    MTP draft's attention layers pass to :func:`get_rotary_embedding`.

    config.json (re-read: ``hf_config`` may hold an override that dropped the
    checkpoint's theta and partial factor) with flat ``hf_overrides`` values
    applied, then a ``rope_scaling`` / ``rope_parameters`` dict override merged
    on top, then checked. With :class:`YarnFactorSelector` in ``logits_processors``
    the dict also carries ``per_request_factors``.
    """
    model_config = _target_model_config(vllm_config)
    hf_config = model_config.hf_text_config
    overrides = model_config.hf_overrides
    text = _read_config_json(str(model_config.hf_config_path or model_config.model), model_config.revision)
    if text is not None:
        config_dict = json.loads(text)
    else:
        # Only what vLLM kept: the values survive unless a dict override replaced them.
        config_dict = {"rope_parameters": dict(getattr(hf_config, "rope_parameters", None) or {})}
    override, source = None, ""
    if isinstance(overrides, dict):
        config_dict |= {k: v for k, v in overrides.items() if k in OWN_KEYS}
        # vLLM sets dict overrides in order; the last rope key wins.
        name = next((k for k in reversed(overrides) if k in OVERRIDE_KEYS), None)
        if name is not None:
            override, source = overrides[name], f"hf_overrides[{name!r}]"
    else:  # a callable override: take whatever it left in hf_config
        override, source = dict(getattr(hf_config, "rope_parameters", None) or {}), "hf_overrides (callable)"
    params = resolve_rope_parameters(config_dict, hf_config.head_dim, override, source)

    if _selector_requested(model_config):
        source = "logits_processors"
        if params["rope_type"] != "yarn":
            _fail(source, "YarnFactorSelector needs rope_type 'yarn' (it picks among YaRN factors)")
        if vllm_config.cache_config.enable_prefix_caching:
            _fail(
                source,
                "YarnFactorSelector needs enable_prefix_caching=False: cached blocks would "
                "carry keys rotated with another request's factor",
            )
        params["per_request_factors"] = per_request_factors(params["factor"])
    return params


# --- frequencies ----------------------------------------------------------------


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


def per_request_factors(factor: float) -> tuple[float, ...]:
    """The tables of the per-request mode: 1 (plain rope), 2, 4, ... below ``factor``, then ``factor``."""
    factors, f = [1.0], 2.0
    while f < factor:
        factors.append(f)
        f *= 2
    return (*factors, float(factor))


def _factor_params(params: dict, factor: float) -> dict:
    if factor == 1:
        return {"rope_type": "default", **{k: params[k] for k in OWN_KEYS}}
    return {k: v for k, v in params.items() if k != "per_request_factors"} | {"factor": factor}


# --- the module -------------------------------------------------------------------


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
            _check_no_cuda_graphs()
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
            _SELECTOR_STATE.tables = module
        logger.info(
            "vllm_qwen3next: rope %s, %d of %d dims rotated, table of %d positions",
            json.dumps(rope_parameters, sort_keys=True), module.rotary_dim, head_size, module.max_position_embeddings,
        )
    return _ROTARY_EMBEDDINGS[key]


def rotary_table_positions(config, max_model_len: int) -> int:
    """Rows each table needs: every position below ``max_model_len`` (and at least
    what vLLM's own tables hold)."""
    return max(max_model_len, config.max_position_embeddings)


# --- per-request factors ----------------------------------------------------------


class _SelectorState:
    """Shared, in one worker process, by the selector and the rotary tables.

    ``row_offsets`` [max_num_seqs + 1]: table offset of each batch row. Allocated
    once and written in place, so the forward pass always reads the same tensor.
    """

    def __init__(self):
        self.row_offsets: torch.Tensor | None = None
        self.tables: Qwen3NextRotaryEmbedding | None = None

    def buffer(self, num_rows: int, device) -> torch.Tensor:
        if self.row_offsets is None:
            self.row_offsets = torch.zeros(num_rows + 1, dtype=torch.int64, device=device)
        return self.row_offsets


_SELECTOR_STATE = _SelectorState()


class YarnFactorSelector(LogitsProcessor):
    """Opt-in per-request YaRN factor (pass it in ``logits_processors``).

    Records, per batch row, prompt length plus ``max_tokens`` and writes the
    offset of that request's table before each forward pass. The factor is
    fixed for the life of a request (its cached keys were rotated with it).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.max_model_len = vllm_config.model_config.max_model_len
        self.row_offsets = _SELECTOR_STATE.buffer(vllm_config.scheduler_config.max_num_seqs, device)
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
        tables = _SELECTOR_STATE.tables
        offsets = [0] * batch_update.batch_size
        if tables is not None:
            for index, n in lengths.items():
                if index < batch_update.batch_size:
                    offsets[index] = tables.table_offsets[tables.table_for_length(n)]
        self.row_offsets[: len(offsets)].copy_(torch.tensor(offsets, dtype=torch.int64), non_blocking=True)


def _selector_requested(model_config) -> bool:
    for proc in model_config.logits_processors or ():
        name = proc if isinstance(proc, str) else f"{proc.__module__}:{proc.__qualname__}"
        if name == f"{__name__}:{YarnFactorSelector.__qualname__}":
            return True
    return False


def _check_no_cuda_graphs() -> None:
    from vllm.config import CUDAGraphMode, get_current_vllm_config

    mode = get_current_vllm_config().compilation_config.cudagraph_mode
    if mode is not None and mode != CUDAGraphMode.NONE:
        _fail(
            "logits_processors",
            f"YarnFactorSelector needs enforce_eager=True (cudagraph_mode is {mode.name}): "
            "a captured graph would replay the table rows of the batch it was captured with",
        )


def qwen3next_yarn_table_rows(positions: torch.Tensor) -> torch.Tensor:
    """positions [T] -> table rows [T]: position plus the offset of its request's table.

    Tokens come in batch-row order; ``query_start_loc`` [R + 1] of the attention
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
    rows = torch.searchsorted(query_start_loc[1:], token, right=True)  # [T], padding -> R
    row_offsets = _SELECTOR_STATE.row_offsets
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
