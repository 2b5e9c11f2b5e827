"""Gated full attention of Qwen3-Next.

Shapes: T = tokens, Hq / Hkv = query / kv heads on this rank, Dh = head dim.
``q_proj`` holds, per query head, the query then an output gate of the same size;
the attention output is multiplied by ``sigmoid(gate)`` before ``o_proj``.
q and k get Gemma-style RMSNorms per head, then partial NeoX rope
(``partial_rotary_factor`` of each head; tables in ``rotary_embedding.py``,
settings in ``rope_config.py``).
"""

import torch
from torch import nn
from transformers import PretrainedConfig

from vllm.config import CacheConfig, get_current_vllm_config
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import GemmaRMSNorm
from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from vllm_qwen3next.layers.rotary_embedding import get_rotary_embedding, rotary_table_positions


class Qwen3NextAttention(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        rope_parameters: dict,
        cache_config: CacheConfig | None,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ):
        super().__init__()
        tp_size = get_tensor_model_parallel_world_size()
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads // tp_size
        self.num_kv_heads = max(1, config.num_key_value_heads // tp_size)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim

        # Each query head counts twice: [query | gate] rows per head.
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            2 * config.num_attention_heads,
            config.num_key_value_heads,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.qkv_proj",
        )
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * self.head_dim,
            config.hidden_size,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.o_proj",
        )
        max_model_len = get_current_vllm_config().model_config.max_model_len
        self.rotary_emb = get_rotary_embedding(
            self.head_dim, rope_parameters, rotary_table_positions(config, max_model_len)
        )
        self.attn = Attention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads,
            cache_config=cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )
        self.q_norm = GemmaRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        num_tokens = hidden_states.shape[0]
        qkv, _ = self.qkv_proj(hidden_states)
        q_gate, k, v = qkv.split([2 * self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, gate = q_gate.view(num_tokens, self.num_heads, 2, self.head_dim).unbind(2)
        q = self.q_norm(q.contiguous()).view(num_tokens, self.q_size)
        k = self.k_norm(k.reshape(num_tokens, self.num_kv_heads, self.head_dim))
        q, k = self.rotary_emb(positions, q, k.view(num_tokens, self.kv_size))
        out = self.attn(q, k, v)  # [T, Hq*Dh]
        out = out * torch.sigmoid(gate.reshape(num_tokens, self.q_size))
        out, _ = self.o_proj(out)
        return out
