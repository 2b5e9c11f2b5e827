"""Sparse MoE block of Qwen3-Next: softmax top-k routing over the experts
(renormalised when ``norm_topk_prob``) plus one shared expert scaled by
``sigmoid(x . w)``. Shapes: T = tokens, E = experts, Dm = hidden size."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from vllm.config import VllmConfig
from vllm.distributed import get_ep_group
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.fused_moe import FusedMoEFactory, GateLinear
from vllm.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.interfaces import MixtureOfExperts


class Qwen3NextSharedExpert(nn.Module):
    """SwiGLU MLP whose output is scaled by ``sigmoid(expert_gate(x))``."""

    def __init__(
        self,
        config: PretrainedConfig,
        expert_gate: nn.Module,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ):
        super().__init__()
        size = config.shared_expert_intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(
            config.hidden_size,
            [size, size],
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.gate_up_proj",
        )
        # FusedMoE reduces routed + shared output across TP ranks once.
        self.down_proj = RowParallelLinear(
            size,
            config.hidden_size,
            bias=False,
            reduce_results=False,
            quant_config=quant_config,
            prefix=f"{prefix}.down_proj",
        )
        self.act_fn = SiluAndMul()
        self.expert_gate = expert_gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        out, _ = self.down_proj(self.act_fn(gate_up))
        return F.sigmoid(self.expert_gate(x)[0]) * out


class Qwen3NextSparseMoeBlock(nn.Module):
    def __init__(self, vllm_config: VllmConfig, config: PretrainedConfig, prefix: str):
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"Qwen3-Next experts use silu, config has {config.hidden_act!r}")
        quant_config = vllm_config.quant_config
        # Router and shared-expert gate stay unquantized, as in vLLM's built-in model.
        self.gate = GateLinear(config.hidden_size, config.num_experts, prefix=f"{prefix}.gate")
        if config.shared_expert_intermediate_size > 0:
            self.shared_expert_gate = ReplicatedLinear(
                config.hidden_size,
                1,
                bias=False,
                quant_config=None,
                prefix=f"{prefix}.shared_expert_gate",
            )
            self.shared_expert = Qwen3NextSharedExpert(
                config, self.shared_expert_gate, quant_config, prefix=f"{prefix}.shared_expert"
            )
        else:
            self.shared_expert = None
        eplb = vllm_config.parallel_config.eplb_config
        # Expert counts read by the load balancer (Qwen3NextMixtureOfExperts).
        self.n_routed_experts = self.n_logical_experts = config.num_experts
        self.n_redundant_experts = eplb.num_redundant_experts
        self.n_physical_experts = config.num_experts + eplb.num_redundant_experts
        self.n_local_physical_experts = self.n_physical_experts // get_ep_group().device_group.size()
        self.experts = FusedMoEFactory(
            shared_experts=self.shared_expert,
            gate=self.gate,
            num_experts=config.num_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            intermediate_size=config.moe_intermediate_size,
            renormalize=getattr(config, "norm_topk_prob", True),
            quant_config=quant_config,
            prefix=f"{prefix}.experts",
            enable_eplb=vllm_config.parallel_config.enable_eplb,
            num_redundant_experts=eplb.num_redundant_experts,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # [T, Dm]
        # The gate runs inside FusedMoE; it takes the hidden states as its input.
        return self.experts(hidden_states=hidden_states, router_logits=hidden_states)


class Qwen3NextMixtureOfExperts(MixtureOfExperts):
    """vLLM's expert-parallel load-balancing interface, as the built-in model has it:
    expert counts and the MoE layers of ``self.model.layers``."""

    def set_moe_parameters(self) -> None:
        blocks = [
            layer.mlp for layer in self.model.layers if isinstance(getattr(layer, "mlp", None), Qwen3NextSparseMoeBlock)
        ]
        if not blocks:
            raise RuntimeError("No Qwen3-Next MoE layer found in model.layers.")
        self.moe_layers = [block.experts for block in blocks]
        self.num_moe_layers = len(blocks)
        self.num_expert_groups = 1
        self.num_shared_experts = 0
        example = blocks[0]
        self.num_logical_experts = example.n_logical_experts
        self.num_physical_experts = example.n_physical_experts
        self.num_local_physical_experts = example.n_local_physical_experts
        self.num_routed_experts = example.n_routed_experts
        self.num_redundant_experts = example.n_redundant_experts

    def update_physical_experts_metadata(
        self, num_physical_experts: int, num_local_physical_experts: int
    ) -> None:
        assert self.num_local_physical_experts == num_local_physical_experts
        self.num_physical_experts = num_physical_experts
        self.num_local_physical_experts = num_local_physical_experts
        self.num_redundant_experts = num_physical_experts - self.num_logical_experts
        for layer in self.model.layers:
            if isinstance(getattr(layer, "mlp", None), Qwen3NextSparseMoeBlock):
                block = layer.mlp
                block.n_local_physical_experts = num_local_physical_experts
                block.n_physical_experts = num_physical_experts
                block.n_redundant_experts = self.num_redundant_experts
                block.experts.update_expert_map()
