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
