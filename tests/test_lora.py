"""The model interfaces vLLM asks of Qwen3-Next, against its built-in model: LoRA
(``SupportsLoRA`` and the LoRA-packed modules), EAGLE-3 (auxiliary hidden states)
and expert-parallel load balancing (``MixtureOfExperts``), and what we refuse."""

import pytest

from vllm.model_executor.models import qwen3_next as builtin
from vllm.model_executor.models import qwen3_next_mtp as builtin_mtp
from vllm.model_executor.models.interfaces import (
    EagleModelMixin,
    MixtureOfExperts,
    SupportsEagle3,
    has_inner_state,
    is_hybrid,
    supports_eagle3,
    supports_lora,
    supports_pp,
)

from vllm_qwen3next import model as ours
from vllm_qwen3next import mtp as ours_mtp

PREDICATES = (supports_lora, supports_eagle3, supports_pp, is_hybrid, has_inner_state)


@pytest.mark.parametrize(
    "mine, theirs",
    [(ours.Qwen3NextForCausalLM, builtin.Qwen3NextForCausalLM), (ours_mtp.Qwen3NextMTP, builtin_mtp.Qwen3NextMTP)],
    ids=["causal-lm", "mtp"],
)
def test_interfaces_as_builtin(mine, theirs):
    """vLLM decides what a model accepts (--enable-lora, EAGLE-3 drafts, EPLB) from these."""
    assert {f.__name__: f(mine) for f in PREDICATES} == {f.__name__: f(theirs) for f in PREDICATES}
    assert (MixtureOfExperts in mine.__mro__) == (MixtureOfExperts in theirs.__mro__) == True  # noqa: E712
    assert mine.packed_modules_mapping == theirs.packed_modules_mapping
    for name in ("set_moe_parameters", "update_physical_experts_metadata", "set_eplb_state"):
        assert callable(getattr(mine, name))


def test_eagle3_aux_hidden_states():
    """EAGLE-3 collects the residual stream after chosen layers, as vLLM's mixin does."""
    import torch
    from types import SimpleNamespace

    assert issubclass(ours.Qwen3NextModel, EagleModelMixin)
    holder = SimpleNamespace(model=SimpleNamespace(layers=[None] * 48))
    assert SupportsEagle3.get_eagle3_default_aux_hidden_state_layers(holder) == (2, 24, 45)
    mixin = ours.Qwen3NextModel.__new__(ours.Qwen3NextModel)
    mixin.aux_hidden_state_layers = (0, 2)
    h, r = torch.ones(3, 4), torch.full((3, 4), 2.0)
    aux = mixin._maybe_add_hidden_state([], 0, h, None)
    mixin._maybe_add_hidden_state(aux, 1, h, r)
    mixin._maybe_add_hidden_state(aux, 2, h, r)
    assert len(aux) == 2 and torch.equal(aux[0], h) and torch.equal(aux[1], h + r)


def test_sequence_parallel_moe_refused():
    from types import SimpleNamespace

    config = SimpleNamespace(parallel_config=SimpleNamespace(use_sequence_parallel_moe=True))
    with pytest.raises(ValueError, match="sequence-parallel MoE.*VLLM_PLUGINS="):
        ours.refuse_unsupported(config)


def _adapter(ckpt, out):
    """A rank-8 PEFT LoRA adapter on the full-attention layer's q_proj and o_proj."""
    import json

    import torch
    from safetensors.torch import save_file

    cfg = json.loads((ckpt / "config.json").read_text())
    hidden, heads, dim = cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"]
    g = torch.Generator().manual_seed(0)
    p = "base_model.model.model.layers.3.self_attn"
    tensors = {
        f"{p}.q_proj.lora_A.weight": torch.randn(8, hidden, generator=g) * 0.1,
        f"{p}.q_proj.lora_B.weight": torch.randn(2 * heads * dim, 8, generator=g) * 0.1,
        f"{p}.o_proj.lora_A.weight": torch.randn(8, heads * dim, generator=g) * 0.1,
        f"{p}.o_proj.lora_B.weight": torch.randn(hidden, 8, generator=g) * 0.1,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "o_proj"],
        "bias": "none", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(ckpt),
    }))
    return out


def test_enable_lora_accepted(store):
    """vLLM accepts --enable-lora with our model (it refused: "does not support LoRA
    yet") and starts the engine. On vLLM 0.32 for CPU the first LoRA step then fails
    in vLLM's Triton MoE kernel, for the built-in model too (QWEN3_NEXT.md section 6);
    where that path runs, the adapter must change the greedy output."""
    ckpt = store.checkpoint("tiny", "bfloat16")
    adapter = _adapter(ckpt, store.root / "lora-adapter")
    llm = dict(model=str(ckpt), dtype="bfloat16", max_model_len=512, enforce_eager=True,
               enable_lora=True, max_lora_rank=8, max_loras=1)
    prompts = [[5, 6, 7, 8, 9]]
    try:
        out = store.engine("lora-ours", {"llm": llm, "prompts": prompts, "max_tokens": 8, "lora": str(adapter)})
    except RuntimeError as err:
        text = str(err)
        assert "does not support LoRA" not in text
        log = (store.root / "engines" / "lora-ours.log").read_text()
        assert "engine_runner: engine started" in log  # the failure came after the start
        assert "triton" in text.lower(), text[-2000:]
        print("LoRA: engine with --enable-lora started with our model; the first LoRA step failed "
              "in vLLM's Triton MoE kernel on CPU (as for the built-in)")
        return
    base = store.engine("lora-ours-base", {"llm": llm, "prompts": prompts, "max_tokens": 8})
    assert out["classes"]["model"].startswith("vllm_qwen3next.")
    assert out["results"][0]["output_ids"] != base["results"][0]["output_ids"]
