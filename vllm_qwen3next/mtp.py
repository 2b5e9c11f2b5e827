"""Qwen3-Next multi-token prediction (the ``qwen3_next_mtp`` / ``mtp`` draft).

One extra full-attention MoE decoder layer fed with
``fc(cat(norm_e(embed(token)), norm_h(hidden)))`` (embedding first), where
``hidden`` is the target's last hidden state at the previous position. The
embedding and lm_head are the target's: vLLM's proposer shares them after load.
Shapes: T = tokens, Dm = hidden size.
"""

from collections.abc import Iterable

import torch
from torch import nn

from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.layers.layernorm import GemmaRMSNorm
from vllm.model_executor.layers.linear import ColumnParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, maybe_prefix

from vllm_qwen3next.config import validate_config
from vllm_qwen3next.layers.moe import Qwen3NextMixtureOfExperts
from vllm_qwen3next.model import STACKED_PARAMS, Qwen3NextDecoderLayer
from vllm_qwen3next.weights import CheckpointMismatchError, checked_weights, expected_layout

logger = init_logger(f"vllm.{__name__}")

# The draft reads these from the target's part of the checkpoint.
SHARED_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


@support_torch_compile
class Qwen3NextMultiTokenPredictor(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        hidden = config.hidden_size
        self.num_mtp_layers = getattr(config, "num_nextn_predict_layers", None) or 1
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, hidden)
        quant_config = vllm_config.quant_config
        # As the built-in: NVFP4 checkpoints store mtp.fc unquantized without listing it.
        if quant_config is not None and quant_config.get_name() == "modelopt_fp4":
            quant_config = None
        self.fc = ColumnParallelLinear(
            2 * hidden, hidden, bias=False, gather_output=True, return_bias=False,
            quant_config=quant_config, prefix=f"{prefix}.fc",
        )
        self.layers = nn.ModuleList(
            Qwen3NextDecoderLayer(
                vllm_config, config, "full_attention", prefix=f"{prefix}.layers.{i}"
            )
            for i in range(self.num_mtp_layers)
        )
        eps = config.rms_norm_eps
        self.pre_fc_norm_embedding = GemmaRMSNorm(hidden, eps=eps)
        self.pre_fc_norm_hidden = GemmaRMSNorm(hidden, eps=eps)
        self.norm = GemmaRMSNorm(hidden, eps=eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,  # [T, Dm] target hidden states
        inputs_embeds: torch.Tensor | None = None,
        spec_step_idx: int = 0,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        x = torch.cat(
            [self.pre_fc_norm_embedding(inputs_embeds), self.pre_fc_norm_hidden(hidden_states)],
            dim=-1,
        )
        layer = self.layers[spec_step_idx % self.num_mtp_layers]
        hidden_states, residual = layer(positions, self.fc(x), None)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class Qwen3NextMTP(nn.Module, Qwen3NextMixtureOfExperts):
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={"mtp.": "model."}, orig_to_new_stacked=STACKED_PARAMS
    )

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        validate_config(config, vllm_config.parallel_config.tensor_parallel_size)
        self.config = config
        self.vllm_config = vllm_config
        self.model = Qwen3NextMultiTokenPredictor(
            vllm_config=vllm_config, prefix=maybe_prefix(prefix, "mtp")
        )
        self.lm_head = ParallelLMHead(
            config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "lm_head")
        )
        self.logits_processor = LogitsProcessor(config.vocab_size)
        self.set_moe_parameters()
        logger.info(
            "vllm_qwen3next: Qwen3NextMTP draft with %d MTP layer(s)", self.model.num_mtp_layers
        )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds: torch.Tensor | None = None,
        spec_step_idx: int = 0,
        **kwargs: object,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, hidden_states, inputs_embeds, spec_step_idx)

    def compute_logits(self, hidden_states: torch.Tensor, spec_step_idx: int = 0):
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        shared = SHARED_TENSORS[: 1 if getattr(self.config, "tie_word_embeddings", False) else 2]
        layout = expected_layout(self, self.vllm_config, _checkpoint_name)
        found_mtp = False

        def own(weights):
            nonlocal found_mtp
            for name, tensor in weights:
                if name.startswith("mtp."):
                    found_mtp = True
                    yield name, tensor
                elif name in shared:
                    yield name, tensor

        checked = checked_weights(own(weights), layout, what="Qwen3-Next MTP draft")
        loader = AutoWeightsLoader(self)
        try:
            return loader.load_weights(checked, mapper=self.hf_to_vllm_mapper)
        except CheckpointMismatchError as err:
            if found_mtp:
                raise
            raise CheckpointMismatchError(
                "The checkpoint has no mtp.* tensors, so it cannot serve as the "
                "qwen3_next_mtp draft: serve it without --speculative-config. " + str(err)
            ) from None


def _checkpoint_name(module_name: str) -> str:
    """Our draft's module names -> checkpoint names (the inverse of its mapper)."""
    if module_name == "model.embed_tokens" or not module_name.startswith("model."):
        return module_name
    return "mtp." + module_name.removeprefix("model.")
