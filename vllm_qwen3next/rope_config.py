"""The rope settings of Qwen3-Next: read from config.json, merged with vLLM's
``hf_overrides``, checked before any layer is built.

The checkpoint's own ``rope_theta`` and ``partial_rotary_factor`` come from
config.json in either style (top level beside ``rope_scaling``, as in the
released model, or inside transformers-5 ``rope_parameters``). vLLM 0.32 applies
a dict-valued ``hf_overrides`` entry with ``setattr(hf_config, key, value)``, and
transformers 5 maps ``rope_scaling`` onto ``rope_parameters``: an override that
holds only the YaRN keys replaces the whole dict and drops theta and the partial
factor (the built-in then rotates the whole head with theta 10000). So
:func:`rope_parameters_for` re-reads config.json and merges the override on top.

The tables and the rotary module are in ``layers/rotary_embedding.py``; the
opt-in per-request factor in ``yarn_selector.py``.
"""

import functools
import json
from pathlib import Path

from vllm.logger import init_logger

from vllm_qwen3next.yarn_selector import check_selector_settings, selector_requested

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
    MTP draft's attention layers pass to ``get_rotary_embedding``.

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

    if selector_requested(model_config):
        check_selector_settings(params, vllm_config)
        params["per_request_factors"] = per_request_factors(params["factor"])
    return params


def per_request_factors(factor: float) -> tuple[float, ...]:
    """The tables of the per-request mode: 1 (plain rope), 2, 4, ... below ``factor``, then ``factor``."""
    factors, f = [1.0], 2.0
    while f < factor:
        factors.append(f)
        f *= 2
    return (*factors, float(factor))
