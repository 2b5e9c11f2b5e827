"""Qwen3-Next for vLLM: decoder layers, the model and the causal-LM head.

Layer i mixes tokens with Gated DeltaNet (``linear_attention``) or gated full
attention (``full_attention``), then a sparse MoE block; all norms are
Gemma-style (``x_hat * (1 + w)``). Shapes: T = tokens, Dm = hidden size.
"""

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from transformers import PretrainedConfig

from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.logger import init_logger
from vllm.model_executor.layers.layernorm import GemmaRMSNorm
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.mamba.mamba_utils import MambaStateCopyFuncCalculator
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.models.interfaces import (
    EagleModelMixin,
    HasInnerState,
    IsHybrid,
    SupportsEagle3,
    SupportsLoRA,
    SupportsPP,
)
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    PPMissingLayer,
    WeightsMapper,
    extract_layer_index,
    is_pp_missing_parameter,
    make_empty_intermediate_tensors_factory,
    make_layers,
    maybe_prefix,
)
from vllm.platforms import current_platform
from vllm.sequence import IntermediateTensors

from vllm_qwen3next import prefill_backend
from vllm_qwen3next.fixes import pp_block_size, pp_intermediate_tensors
from vllm_qwen3next.fixes import generator
from vllm_qwen3next.fixes import mamba_copy
from vllm_qwen3next.fixes import sampling as cpu_sampling
from vllm_qwen3next.config import layer_types, validate_config
from vllm_qwen3next.layers.attention import Qwen3NextAttention
from vllm_qwen3next.layers.gdn import GDN_CORE_OP, Qwen3NextGatedDeltaNet
from vllm_qwen3next.layers.moe import Qwen3NextMixtureOfExperts, Qwen3NextSparseMoeBlock
from vllm_qwen3next.layers.state import gdn_state_dtypes, gdn_state_shapes
from vllm_qwen3next.rope_config import rope_parameters_for
from vllm_qwen3next.weights import checked_weights, expected_layout

logger = init_logger(f"vllm.{__name__}")

# Refused at start on CPU: vLLM 0.32's V1 model runner (the only one on CPU) builds the
# drafter on the last stage only and reads it on every stage (_check_and_update_cudagraph_mode:
# "'CPUModelRunner' object has no attribute 'drafter'", for the built-in too), and it counts
# the accepted drafts on the last stage only, so the GDN layers of earlier stages would resume
# from the wrong state slot (vllm-project/vllm#44697).
PP_WITH_MTP = (
    "Qwen3-Next: speculative decoding (MTP) with pipeline_parallel_size > 1 is not supported "
    "by vLLM 0.32 on CPU: its V1 model runner builds the draft on the last stage only but "
    "reads it on every stage, and counts accepted drafts on the last stage only, so the GDN "
    "states of the earlier stages would resume from the wrong token (vllm-project/vllm#44697). "
    "Use tensor parallelism with MTP, or pipeline parallelism without --speculative-config "
    "(VLLM_PLUGINS= gives vLLM's built-in model, which does not start in this configuration "
    "either)."
)

# Checkpoint names -> (fused vLLM parameter, shard id).
STACKED_PARAMS = {
    ".q_proj": (".qkv_proj", "q"),
    ".k_proj": (".qkv_proj", "k"),
    ".v_proj": (".qkv_proj", "v"),
    ".shared_expert.gate_proj": (".shared_expert.gate_up_proj", 0),
    ".shared_expert.up_proj": (".shared_expert.gate_up_proj", 1),
}


class Qwen3NextDecoderLayer(nn.Module):
    def __init__(self, vllm_config: VllmConfig, config: PretrainedConfig, layer_type: str, prefix: str):
        super().__init__()
        self.layer_type = layer_type
        if layer_type == "linear_attention":
            self.linear_attn = Qwen3NextGatedDeltaNet(
                config, vllm_config, prefix=f"{prefix}.linear_attn"
            )
        else:
            self.self_attn = Qwen3NextAttention(
                config,
                rope_parameters_for(vllm_config),
                vllm_config.cache_config,
                vllm_config.quant_config,
                prefix=f"{prefix}.self_attn",
            )
        self.mlp = Qwen3NextSparseMoeBlock(vllm_config, config, prefix=f"{prefix}.mlp")
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        if self.layer_type == "linear_attention":
            hidden_states = self.linear_attn(hidden_states)
        else:
            hidden_states = self.self_attn(positions, hidden_states)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


@support_torch_compile
class Qwen3NextModel(nn.Module, EagleModelMixin):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_text_config
        self.config = config
        types = layer_types(config)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.start_layer, self.end_layer, self.layers = make_layers(
            config.num_hidden_layers,
            lambda prefix: Qwen3NextDecoderLayer(
                vllm_config, config, types[extract_layer_index(prefix)], prefix=prefix
            ),
            prefix=f"{prefix}.layers",
        )
        if get_pp_group().is_last_rank:
            self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        else:
            self.norm = PPMissingLayer()
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )
        self.aux_hidden_state_layers: tuple[int, ...] = ()  # EAGLE-3 (SupportsEagle3)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        if get_pp_group().is_first_rank:
            hidden_states = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
            residual = None
        else:
            hidden_states = intermediate_tensors["hidden_states"]
            residual = intermediate_tensors["residual"]
        aux_hidden_states = self._maybe_add_hidden_state([], 0, hidden_states, residual)
        layers = islice(self.layers, self.start_layer, self.end_layer)
        for index, layer in enumerate(layers, start=self.start_layer):
            hidden_states, residual = layer(positions, hidden_states, residual)
            self._maybe_add_hidden_state(aux_hidden_states, index + 1, hidden_states, residual)
        if not get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": hidden_states, "residual": residual})
        hidden_states, _ = self.norm(hidden_states, residual)
        if aux_hidden_states:
            return hidden_states, aux_hidden_states
        return hidden_states


class Qwen3NextForCausalLM(
    nn.Module,
    HasInnerState,
    SupportsLoRA,
    SupportsPP,
    Qwen3NextMixtureOfExperts,
    IsHybrid,
    SupportsEagle3,
):
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
        "in_proj_qkvz": ["in_proj_qkvz"],
        "in_proj_ba": ["in_proj_ba"],
    }
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_stacked=STACKED_PARAMS)

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_text_config
        validate_config(config, vllm_config.parallel_config.tensor_parallel_size)
        refuse_unsupported(vllm_config)
        prefill_backend.apply(vllm_config)
        self.config = config
        self.vllm_config = vllm_config
        _split_gdn_core_out_of_graphs(vllm_config)
        if vllm_config.speculative_config is not None:
            cpu_sampling.install()  # vLLM 0.32 CPU: sampled speculative decoding needs it
            mamba_copy.install()  # vLLM 0.32 CPU: prefix caching under speculative decoding
        generator.install()  # vLLM 0.32 CPU: seeded requests with a split prefill need it
        if get_pp_group().world_size > 1:
            if vllm_config.speculative_config is not None and current_platform.is_cpu():
                raise NotImplementedError(PP_WITH_MTP)
            pp_block_size.install()  # vLLM 0.32: a stage without attention layers needs it
        if not get_pp_group().is_first_rank:
            pp_intermediate_tensors.install()  # vLLM 0.32 CPU: eager later stages need it
        self.model = Qwen3NextModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.lm_head = ParallelLMHead(
            config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "lm_head")
        )
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size)
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors
        self.set_moe_parameters()

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig):
        # The platform asks this before any worker starts: fail early on a bad config.
        validate_config(
            vllm_config.model_config.hf_text_config,
            vllm_config.parallel_config.tensor_parallel_size,
        )
        refuse_unsupported(vllm_config)
        rope_parameters_for(vllm_config)
        return gdn_state_shapes(vllm_config)

    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig):
        return gdn_state_dtypes(vllm_config)

    @classmethod
    def get_mamba_state_copy_func(cls):
        # vLLM's state-copy kernels accept only its own copy functions; they fit
        # our (state_len, dim) conv layout (see layers/state.py).
        return MambaStateCopyFuncCalculator.gated_delta_net_state_copy_func()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # Under pipeline parallelism the other stages' layers are PPMissingLayer: their
        # tensors are theirs to check (the loader skips them too).
        weights = checked_weights(
            ((name, t) for name, t in weights if not is_pp_missing_parameter(name, self)),
            expected_layout(self, self.vllm_config),
            ignore_prefixes=("mtp.",),
        )
        loader = AutoWeightsLoader(self)
        return loader.load_weights(weights, mapper=self.hf_to_vllm_mapper)


def refuse_unsupported(vllm_config: VllmConfig) -> None:
    """What vLLM's built-in Qwen3-Next serves and ours does not: fail at start."""
    prefill_backend.check(vllm_config)
    if vllm_config.parallel_config.use_sequence_parallel_moe:
        raise ValueError(
            "vllm_qwen3next does not support sequence-parallel MoE "
            "(use_sequence_parallel_moe: data parallel with expert parallel); "
            "VLLM_PLUGINS= serves the checkpoint with vLLM's built-in Qwen3-Next."
        )


def _split_gdn_core_out_of_graphs(vllm_config: VllmConfig) -> None:
    """Our GDN core op branches on batch metadata and writes the state cache:
    piecewise compilation must split the graph around it, like vLLM's own
    attention ops. vLLM's default list does not know our op name."""
    splitting_ops = vllm_config.compilation_config.splitting_ops
    if splitting_ops and GDN_CORE_OP not in splitting_ops:
        splitting_ops.append(GDN_CORE_OP)
        logger.info("vllm_qwen3next: added %s to the compilation splitting ops", GDN_CORE_OP)
