"""The plugin entry point and the fail-early checks, without starting an engine."""

import logging
from types import SimpleNamespace

import pytest
from transformers import AutoConfig

import vllm_qwen3next
from vllm_qwen3next.config import layer_types, validate_config
from vllm_qwen3next.weights import CheckpointMismatchError, checked_weights, target_layout


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "qwen3next"]
    assert ep.value == "vllm_qwen3next:register"


def test_register_overrides_builtin_once(caplog):
    from vllm import ModelRegistry

    vllm_qwen3next._registered = False
    with caplog.at_level(logging.INFO, logger="vllm.vllm_qwen3next"):
        vllm_qwen3next.register()
        vllm_qwen3next.register()
    lines = [r.getMessage() for r in caplog.records if "vllm_qwen3next" in r.getMessage()]
    assert len(lines) == 1 and vllm_qwen3next.__version__ in lines[0]
    assert "Qwen3NextForCausalLM" in lines[0]
    model_cls = ModelRegistry._try_load_model_cls("Qwen3NextForCausalLM")
    assert model_cls.__module__ == "vllm_qwen3next.model"


@pytest.fixture(scope="module")
def tiny_config(store):
    return AutoConfig.from_pretrained(store.checkpoint("tiny"))


def test_layer_types_derived_from_interval(tiny_config):
    assert layer_types(tiny_config) == ["linear_attention"] * 3 + ["full_attention"]


@pytest.mark.parametrize(
    "field, value, tp, message",
    [
        ("linear_num_value_heads", 5, 1, "linear_num_value_heads (5) must be a multiple of linear_num_key_heads (2)"),
        ("linear_num_key_heads", 2, 4, "linear_num_key_heads (2) is not divisible by tensor_parallel_size (4)"),
        ("num_attention_heads", 3, 1, "num_attention_heads (3) must be a multiple of num_key_value_heads (2)"),
        ("hidden_size", "128", 1, "hidden_size must be a positive integer, got '128'"),
        ("num_experts_per_tok", 9, 1, "num_experts_per_tok (9) exceeds num_experts (8)"),
        ("layer_types", ["linear_attention"] * 3, 1, "layer_types has 3 entries but num_hidden_layers is 4"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_config_names_fields(tiny_config, field, value, tp, message):
    # A plain namespace: transformers' own type checks would stop some of these first.
    config = SimpleNamespace(**(tiny_config.to_dict() | {field: value}))
    with pytest.raises(ValueError, match="Invalid Qwen3-Next config") as err:
        validate_config(config, tp)
    assert message in str(err.value)


def test_checkpoint_check_lists_every_problem(tiny_config):
    import torch

    layout = target_layout(tiny_config)
    tensors = {name: torch.zeros(shape) for name, shape in layout.items()}
    del tensors["model.layers.0.linear_attn.A_log"]
    del tensors["model.layers.3.mlp.experts.7.down_proj.weight"]
    tensors["model.layers.1.linear_attn.surprise"] = torch.zeros(3)
    tensors["model.norm.weight"] = torch.zeros(7)
    tensors["mtp.fc.weight"] = torch.zeros(2)  # ignored by the target
    with pytest.raises(CheckpointMismatchError) as err:
        list(checked_weights(tensors.items(), layout, ignore_prefixes=("mtp.",)))
    text = str(err.value)
    assert "2 missing: model.layers.0.linear_attn.A_log, model.layers.3.mlp.experts.7.down_proj.weight" in text
    assert "1 unexpected: model.layers.1.linear_attn.surprise" in text
    assert f"model.norm.weight: expected [{tiny_config.hidden_size}], found [7]" in text
