"""The checkpoint layout of Qwen3-Next, and the load-time check against it.

A broken checkpoint fails before any tensor is copied into the model, with the
complete list of what is missing, unexpected or mis-shaped, in checkpoint names.
"""

from collections.abc import Iterable, Iterator

import torch
from transformers import PretrainedConfig

from vllm_qwen3next.config import layer_types


def decoder_layer_layout(config: PretrainedConfig, prefix: str, layer_type: str) -> dict:
    """Tensor name -> shape for one decoder layer under ``prefix``."""
    hidden = config.hidden_size
    layout = {
        f"{prefix}.input_layernorm.weight": (hidden,),
        f"{prefix}.post_attention_layernorm.weight": (hidden,),
    }
    if layer_type == "linear_attention":
        hk, hv = config.linear_num_key_heads, config.linear_num_value_heads
        k, v = config.linear_key_head_dim, config.linear_value_head_dim
        conv_dim = 2 * hk * k + hv * v
        p = f"{prefix}.linear_attn"
        layout |= {
            f"{p}.in_proj_qkvz.weight": (2 * hk * k + 2 * hv * v, hidden),
            f"{p}.in_proj_ba.weight": (2 * hv, hidden),
            f"{p}.conv1d.weight": (conv_dim, 1, config.linear_conv_kernel_dim),
            f"{p}.A_log": (hv,),
            f"{p}.dt_bias": (hv,),
            f"{p}.norm.weight": (v,),
            f"{p}.out_proj.weight": (hidden, hv * v),
        }
    else:
        nq, nkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        p = f"{prefix}.self_attn"
        layout |= {
            f"{p}.q_proj.weight": (2 * nq * d, hidden),
            f"{p}.k_proj.weight": (nkv * d, hidden),
            f"{p}.v_proj.weight": (nkv * d, hidden),
            f"{p}.o_proj.weight": (hidden, nq * d),
            f"{p}.q_norm.weight": (d,),
            f"{p}.k_norm.weight": (d,),
        }
    p = f"{prefix}.mlp"
    inter = config.moe_intermediate_size
    layout[f"{p}.gate.weight"] = (config.num_experts, hidden)
    for e in range(config.num_experts):
        layout |= {
            f"{p}.experts.{e}.gate_proj.weight": (inter, hidden),
            f"{p}.experts.{e}.up_proj.weight": (inter, hidden),
            f"{p}.experts.{e}.down_proj.weight": (hidden, inter),
        }
    shared = config.shared_expert_intermediate_size
    if shared > 0:
        layout |= {
            f"{p}.shared_expert.gate_proj.weight": (shared, hidden),
            f"{p}.shared_expert.up_proj.weight": (shared, hidden),
            f"{p}.shared_expert.down_proj.weight": (hidden, shared),
            f"{p}.shared_expert_gate.weight": (1, hidden),
        }
    return layout


def target_layout(config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the main model (``model.*`` and ``lm_head``)."""
    layout = {
        "model.embed_tokens.weight": (config.vocab_size, config.hidden_size),
        "model.norm.weight": (config.hidden_size,),
    }
    if not getattr(config, "tie_word_embeddings", False):
        layout["lm_head.weight"] = (config.vocab_size, config.hidden_size)
    for i, kind in enumerate(layer_types(config)):
        layout |= decoder_layer_layout(config, f"model.layers.{i}", kind)
    return layout


def mtp_layout(config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """The multi-token-prediction tensors (``mtp.*``)."""
    hidden = config.hidden_size
    layout = {
        "mtp.fc.weight": (hidden, 2 * hidden),
        "mtp.pre_fc_norm_embedding.weight": (hidden,),
        "mtp.pre_fc_norm_hidden.weight": (hidden,),
        "mtp.norm.weight": (hidden,),
    }
    for i in range(getattr(config, "num_nextn_predict_layers", None) or 1):
        layout |= decoder_layer_layout(config, f"mtp.layers.{i}", "full_attention")
    return layout


class CheckpointMismatchError(ValueError):
    pass


def checked_weights(
    weights: Iterable[tuple[str, torch.Tensor]],
    layout: dict[str, tuple[int, ...]],
    ignore_prefixes: tuple[str, ...] = (),
    what: str = "Qwen3-Next checkpoint",
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass through the tensors that ``layout`` expects; at the end raise
    :class:`CheckpointMismatchError` listing every missing, unexpected or
    mis-shaped tensor. Ignored prefixes are dropped silently."""
    seen: set[str] = set()
    unexpected: list[str] = []
    misshaped: list[str] = []
    for name, tensor in weights:
        if name.startswith(ignore_prefixes):
            continue
        shape = layout.get(name)
        if shape is None:
            unexpected.append(name)
            continue
        seen.add(name)
        if tuple(tensor.shape) != shape:
            misshaped.append(f"{name}: expected {list(shape)}, found {list(tensor.shape)}")
            continue
        yield name, tensor
    missing = sorted(set(layout) - seen)
    if missing or unexpected or misshaped:
        problems = []
        for label, names in (
            ("missing", missing),
            ("unexpected", sorted(unexpected)),
            ("wrong shape", misshaped),
        ):
            if names:
                problems.append(f"{len(names)} {label}: " + ", ".join(names))
        raise CheckpointMismatchError(
            f"{what}: the checkpoint does not match its config.json; " + "; ".join(problems)
        )
