"""The load-time check of a checkpoint against the model that loads it.

The expected tensor names and shapes come from the model's own layers: each
linear layer and each expert is re-created on the meta device at its full
(unsharded) size, at its checkpoint name, with the quantization config it got,
so the tensors its quantization method creates (``weight_scale``, ``qweight``,
``weight_packed``...) are the tensors the checkpoint must hold. The only written
layout is the checkpoint maker's (``vllm_qwen3next.tools.make_checkpoint``).

A broken checkpoint fails before any tensor is copied into the model, with the
complete list of what is missing, unexpected or mis-shaped, in checkpoint names.
"""

import math
import re
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from transformers import PretrainedConfig

from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts
from vllm.model_executor.layers.linear import (
    LinearBase,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
)
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

# Checkpoint name -> shape; None: optional, any shape (KV-cache scales).
Layout = dict[str, tuple[int, ...] | None]


def _linear_sources(name: str, layer: LinearBase) -> dict[str, tuple[int, int]]:
    """Checkpoint module name -> (output, input) size of each tensor a vLLM
    linear layer loads (fused layers load several)."""
    if isinstance(layer, QKVParallelLinear):
        parent = name.rsplit(".", 1)[0]
        q = layer.total_num_heads * layer.head_size
        kv = layer.total_num_kv_heads * (layer.v_head_size or layer.head_size)
        sizes = {"q_proj": q, "k_proj": kv, "v_proj": kv}
        return {f"{parent}.{n}": (size, layer.input_size) for n, size in sizes.items()}
    if isinstance(layer, MergedColumnParallelLinear) and name.endswith(".gate_up_proj"):
        parent = name.rsplit(".", 1)[0]
        gate, up = layer.output_sizes
        return {f"{parent}.gate_proj": (gate, layer.input_size), f"{parent}.up_proj": (up, layer.input_size)}
    return {name: (layer.output_size, layer.input_size)}


def _probe(name: str, output: int, input_: int, quant_config, cache: dict) -> Layout:
    """The tensors of one unsharded linear layer at checkpoint name ``name``."""
    key = (output, input_, re.sub(r"experts\.\d+\.", "experts.#.", name), id(quant_config))
    if key not in cache:
        with torch.device("meta"):
            layer = ReplicatedLinear(input_, output, bias=False, quant_config=quant_config, prefix=name)
        cache[key] = {p: tuple(t.shape) for p, t in layer.named_parameters()}
    return {f"{name}.{p}": shape for p, shape in cache[key].items()}


def expected_layout(
    model: nn.Module, vllm_config: VllmConfig, checkpoint_name: Callable[[str], str] = lambda n: n
) -> Layout:
    """Checkpoint tensor name -> shape for every parameter of ``model``.

    ``checkpoint_name`` maps a module name of ``model`` to its checkpoint name.
    Parameters that are sharded in a way their shape does not show carry a
    ``checkpoint_shape`` attribute (the GDN conv and per-head vectors).
    """
    layout: Layout = {}
    cache: dict = {}
    done: set[int] = set()
    with set_current_vllm_config(vllm_config):
        for name, module in model.named_modules():
            if id(module) in done:
                continue
            if isinstance(module, LinearBase):
                for source, (out, inp) in _linear_sources(checkpoint_name(name), module).items():
                    layout |= _probe(source, out, inp, module.quant_config, cache)
                done.update(id(m) for m in module.modules())
            elif isinstance(module, RoutedExperts):
                layout |= _experts_layout(checkpoint_name(name.rsplit(".", 1)[0]), module, cache)
                done.update(id(m) for m in module.modules())
            elif isinstance(module, Attention):  # KV-cache quantization scales, if any
                for pname, _ in module.named_parameters():
                    layout[f"{checkpoint_name(name)}.{pname}"] = None
                done.update(id(m) for m in module.modules())
            elif isinstance(module, VocabParallelEmbedding):
                layout[f"{checkpoint_name(name)}.weight"] = (module.org_vocab_size, module.embedding_dim)
                done.update(id(m) for m in module.modules())
            else:
                for pname, param in module.named_parameters(recurse=False):
                    shape = getattr(param, "checkpoint_shape", param.shape)
                    layout[f"{checkpoint_name(name)}.{pname}"] = tuple(shape)
    return layout


def _experts_layout(prefix: str, experts: RoutedExperts, cache: dict) -> Layout:
    """One linear layer per expert and projection, as checkpoints store them."""
    cfg = experts.moe_config
    hidden, inter = cfg.hidden_dim, cfg.intermediate_size
    projections = {experts.ckpt_gate_proj_name: (inter, hidden), experts.ckpt_down_proj_name: (hidden, inter)}
    if experts.ckpt_up_proj_name is not None:
        projections[experts.ckpt_up_proj_name] = (inter, hidden)
    layout: Layout = {}
    for e in range(cfg.num_logical_experts):
        for proj, (out, inp) in projections.items():
            layout |= _probe(f"{prefix}.{e}.{proj}", out, inp, experts.quant_config, cache)
    return layout


def target_layout(config: PretrainedConfig) -> Layout:
    """The unquantized checkpoint layout of the main model (``model.*``,
    ``lm_head``), as the checkpoint maker writes it."""
    from vllm_qwen3next.tools.make_checkpoint import weight_specs

    specs = weight_specs(config.to_dict(), with_mtp=False)
    return {name: tuple(shape) for name, (shape, _) in specs.items()}


class CheckpointMismatchError(ValueError):
    pass


def _same_shape(found: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # A per-tensor scale is stored as a scalar or as [1].
    return found == expected or (math.prod(found) == 1 and math.prod(expected) == 1)


def checked_weights(
    weights: Iterable[tuple[str, torch.Tensor]],
    layout: Layout,
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
        if name not in layout:
            unexpected.append(name)
            continue
        shape = layout[name]
        seen.add(name)
        if shape is not None and not _same_shape(tuple(tensor.shape), shape):
            misshaped.append(f"{name}: expected {list(shape)}, found {list(tensor.shape)}")
            continue
        yield name, tensor
    missing = sorted(name for name, shape in layout.items() if shape is not None and name not in seen)
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
