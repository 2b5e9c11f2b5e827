"""Reading and checking a Qwen3-Next configuration before any layer is built.

Imports neither vLLM nor transformers at run time, so the checkpoint maker
(``tools/make_checkpoint.py``) uses :func:`layer_types` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

LAYER_TYPES = ("linear_attention", "full_attention")


def layer_types(config: PretrainedConfig | dict) -> list[str]:
    """Per-layer mixer type: ``config.layer_types``, else every
    ``full_attention_interval``-th layer is full attention (the released models).
    ``config`` is a PretrainedConfig or a config.json dict."""
    def get(name, default=None):
        return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)

    types = get("layer_types")
    if types is None:
        interval = get("full_attention_interval", 4)
        types = [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention"
            for i in range(get("num_hidden_layers"))
        ]
    return list(types)


def _fail(message: str) -> None:
    raise ValueError(f"Invalid Qwen3-Next config: {message}")


def validate_config(config: PretrainedConfig, tp_size: int) -> None:
    """Raise a ValueError naming the fields when the config cannot be served.

    Checks what would otherwise fail deep inside a kernel or weight loader:
    positive integer sizes, head counts that divide, and shards that divide by
    the tensor-parallel size.
    """
    int_fields = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "linear_num_key_heads",
        "linear_num_value_heads",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_conv_kernel_dim",
        "num_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "vocab_size",
    )
    for name in int_fields:
        value = getattr(config, name, None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            _fail(f"{name} must be a positive integer, got {value!r}")
    shared = getattr(config, "shared_expert_intermediate_size", 0)
    if not isinstance(shared, int) or shared < 0:
        _fail(f"shared_expert_intermediate_size must be an integer >= 0, got {shared!r}")

    types = layer_types(config)
    if len(types) != config.num_hidden_layers:
        _fail(
            f"layer_types has {len(types)} entries but num_hidden_layers is "
            f"{config.num_hidden_layers}"
        )
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown:
        _fail(f"layer_types holds unknown types {unknown}; expected {list(LAYER_TYPES)}")

    if getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1:
        _fail(
            "dense MLP layers (mlp_only_layers / decoder_sparse_step != 1) are not "
            "supported: every Qwen3-Next layer has a sparse MoE block"
        )

    hk, hv = config.linear_num_key_heads, config.linear_num_value_heads
    if hv % hk:
        _fail(
            f"linear_num_value_heads ({hv}) must be a multiple of "
            f"linear_num_key_heads ({hk})"
        )
    nq, nkv = config.num_attention_heads, config.num_key_value_heads
    if nq % nkv:
        _fail(f"num_attention_heads ({nq}) must be a multiple of num_key_value_heads ({nkv})")
    if config.num_experts_per_tok > config.num_experts:
        _fail(
            f"num_experts_per_tok ({config.num_experts_per_tok}) exceeds "
            f"num_experts ({config.num_experts})"
        )

    for name, value in (
        ("linear_num_key_heads", hk),
        ("num_attention_heads", nq),
        ("moe_intermediate_size", config.moe_intermediate_size),
        ("shared_expert_intermediate_size", shared),
    ):
        if value % tp_size:
            _fail(f"{name} ({value}) is not divisible by tensor_parallel_size ({tp_size})")
    if nkv % tp_size and tp_size % nkv:
        _fail(
            f"num_key_value_heads ({nkv}) and tensor_parallel_size ({tp_size}) "
            "must divide one another"
        )
