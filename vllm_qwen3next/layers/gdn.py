"""Gated DeltaNet (linear attention) layer of Qwen3-Next.

Shapes: T = tokens in the batch, H / HV = key / value heads on this rank,
K / V = key / value head dim, D = conv channels on this rank (2*H*K + HV*V),
W = conv width, L = conv state length (W - 1 + speculative tokens).

At load time the grouped projection rows of the checkpoint (per key head:
``[q | k | v (HV/H heads) | z (HV/H heads)]`` and ``[b | a]``) are re-ordered
into flat ``[q | k | v | z]`` and ``[b | a]`` blocks, so splitting the projection
output is a free slice and ``[q | k | v]`` is already the conv input layout.
"""

import torch
from torch import nn
from transformers import PretrainedConfig

import qwen3next_kernels  # noqa: F401  (registers torch.ops.qwen3next.*)
from qwen3next_kernels import cpu_ext
from vllm.config import VllmConfig, get_current_vllm_config
from vllm.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
)
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.mamba.abstract import MambaBase
from vllm.model_executor.model_loader.weight_utils import sharded_weight_loader
from vllm.model_executor.utils import set_weight_attrs
from vllm.platforms import current_platform
from vllm.utils.torch_utils import direct_register_custom_op
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum

from vllm_qwen3next.layers.state import gdn_state_dtypes, gdn_state_shapes, ssm_state_is_vk
from vllm_qwen3next import warmup

ops = torch.ops.qwen3next


class Qwen3NextGatedDeltaNet(nn.Module, MambaBase):
    def __init__(self, config: PretrainedConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.config = config
        self.vllm_config = vllm_config
        self.tp_size = get_tensor_model_parallel_world_size()
        self.tp_rank = get_tensor_model_parallel_rank()

        self.total_k_heads = config.linear_num_key_heads
        self.total_v_heads = config.linear_num_value_heads
        self.num_k_heads = self.total_k_heads // self.tp_size
        self.num_v_heads = self.total_v_heads // self.tp_size
        self.head_k_dim = config.linear_key_head_dim
        self.head_v_dim = config.linear_value_head_dim
        self.key_dim = self.num_k_heads * self.head_k_dim
        self.value_dim = self.num_v_heads * self.head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.conv_kernel_size = config.linear_conv_kernel_dim
        self.eps = config.rms_norm_eps
        self.scale = self.head_k_dim**-0.5

        hidden = config.hidden_size
        total_key_dim = self.total_k_heads * self.head_k_dim
        total_value_dim = self.total_v_heads * self.head_v_dim
        quant_config = vllm_config.quant_config
        self.in_proj_qkvz = ColumnParallelLinear(
            hidden,
            2 * total_key_dim + 2 * total_value_dim,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.in_proj_qkvz",
        )
        self.in_proj_ba = ColumnParallelLinear(
            hidden,
            2 * self.total_v_heads,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.in_proj_ba",
        )
        # Every tensor of these layers (weight, scales, packed weights, zero points)
        # is re-ordered from per-key-head groups to flat blocks at load.
        for param in self.in_proj_qkvz.parameters():
            param.weight_loader = self._load_in_proj_qkvz
        for param in self.in_proj_ba.parameters():
            param.weight_loader = self._load_in_proj_ba

        # Depthwise conv weight [D, W]; the checkpoint stores [D_total, 1, W].
        self.conv1d = nn.Module()
        self.conv1d.weight = nn.Parameter(
            torch.empty(self.conv_dim, self.conv_kernel_size), requires_grad=False
        )
        set_weight_attrs(
            self.conv1d.weight,
            {
                "weight_loader": self._load_conv1d,
                "checkpoint_shape": (2 * total_key_dim + total_value_dim, 1, self.conv_kernel_size),
            },
        )

        self.A_log = nn.Parameter(
            torch.empty(self.num_v_heads, dtype=torch.float32), requires_grad=False
        )
        self.dt_bias = nn.Parameter(torch.empty(self.num_v_heads), requires_grad=False)
        for param in (self.A_log, self.dt_bias):
            set_weight_attrs(
                param,
                {"weight_loader": sharded_weight_loader(0), "checkpoint_shape": (self.total_v_heads,)},
            )

        # Gated RMSNorm over each value head: weight [V], shared by all heads.
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.empty(self.head_v_dim), requires_grad=False)

        self.out_proj = RowParallelLinear(
            total_value_dim,
            hidden,
            bias=False,
            input_is_parallel=True,
            quant_config=quant_config,
            prefix=f"{prefix}.out_proj",
        )

        compilation_config = get_current_vllm_config().compilation_config
        if prefix in compilation_config.static_forward_context:
            raise ValueError(f"Duplicate layer name: {prefix}")
        compilation_config.static_forward_context[prefix] = self
        self.kv_cache = (torch.tensor([]), torch.tensor([]))
        self.ssm_state_vk = ssm_state_is_vk()
        if current_platform.is_cpu():
            cpu_ext.available()  # build (once per machine) and load the C++ decode kernels now, not at the first step
        # vLLM's Qwen GDN warm-up would take this layer for its own (it matches by attribute
        # names) and crash: skip it there, warm our Triton kernels instead (warmup.py).
        warmup.register_layer(self, current_platform.device_type)

    @property
    def mamba_type(self) -> MambaAttentionBackendEnum:
        return MambaAttentionBackendEnum.GDN_ATTN

    def get_state_shape(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return gdn_state_shapes(self.vllm_config)

    def get_state_dtype(self) -> tuple[torch.dtype, torch.dtype]:
        return gdn_state_dtypes(self.vllm_config)

    def _load_in_proj_qkvz(self, param: torch.Tensor, loaded: torch.Tensor) -> None:
        ratio = self.total_v_heads // self.total_k_heads
        k, v = self.head_k_dim, ratio * self.head_v_dim
        self._load_grouped(param, loaded, "in_proj_qkvz", [k, k, v, v])

    def _load_in_proj_ba(self, param: torch.Tensor, loaded: torch.Tensor) -> None:
        ratio = self.total_v_heads // self.total_k_heads
        self._load_grouped(param, loaded, "in_proj_ba", [ratio, ratio])

    def _load_grouped(self, param, loaded: torch.Tensor, name: str, segments: list[int]) -> None:
        """One tensor of a grouped projection. Tensors without an output axis
        (per-tensor scales, ``weight_shape``, ``g_idx``) are copied as they are."""
        output_dim = getattr(param, "output_dim", None)
        if output_dim is None:
            param.data.copy_(loaded.reshape(param.shape))
            return
        local = regroup_rows(
            loaded, output_dim, segments, self.total_k_heads, self.tp_rank, self.tp_size,
            what=f"{self.prefix}.{name}",
        )
        param.data.copy_(local)

    def _load_conv1d(self, param: torch.Tensor, loaded: torch.Tensor) -> None:
        """Checkpoint channels are flat ``[q | k | v]``: shard each segment."""
        loaded = loaded.reshape(loaded.shape[0], -1)
        total_key = self.total_k_heads * self.head_k_dim
        segments = loaded.split([total_key, total_key, loaded.shape[0] - 2 * total_key])
        local = [
            seg.narrow(0, self.tp_rank * size, size)
            for seg, size in zip(segments, (self.key_dim, self.key_dim, self.value_dim))
        ]
        param.data.copy_(torch.cat(local, dim=0))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_tokens = hidden_states.shape[0]
        qkvz, _ = self.in_proj_qkvz(hidden_states)  # [T, D + HV*V]
        ba, _ = self.in_proj_ba(hidden_states)  # [T, 2*HV]
        mixed_qkv, z = qkvz.split([self.conv_dim, self.value_dim], dim=-1)
        b, a = ba.split([self.num_v_heads, self.num_v_heads], dim=-1)

        z = z.reshape(num_tokens, self.num_v_heads, self.head_v_dim)

        core_out = torch.empty(
            num_tokens,
            self.num_v_heads,
            self.head_v_dim,
            dtype=hidden_states.dtype,
            device=hidden_states.device,
        )
        torch.ops.vllm.qwen3next_gdn_core(mixed_qkv, z, b, a, core_out, self.prefix)
        out, _ = self.out_proj(core_out.reshape(num_tokens, self.value_dim))
        return out

    def _split_qkv(self, x: torch.Tensor):
        q, k, v = x.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        return (
            q.reshape(-1, self.num_k_heads, self.head_k_dim),
            k.reshape(-1, self.num_k_heads, self.head_k_dim),
            v.reshape(-1, self.num_v_heads, self.head_v_dim),
        )

    def forward_core(
        self,
        mixed_qkv: torch.Tensor,
        z: torch.Tensor,
        b: torch.Tensor,
        a: torch.Tensor,
        core_out: torch.Tensor,
    ) -> None:
        """Conv, gating, the delta rule and the gated RMSNorm readout for the
        tokens of this step, against this layer's state cache.

        vLLM orders the batch decodes first, then prefills. With speculative
        decoding, verification sequences (several tokens each) run against the
        rolling conv state and one recurrent-state slot per token; the other
        sequences see only the conv window rows ``[0, W - 1)``.
        """
        attn_metadata = get_forward_context().attn_metadata
        if attn_metadata is None:  # profiling / dummy run: no cache bound
            core_out.zero_()
            return
        md = attn_metadata[self.prefix]
        conv_state, ssm_state = self.kv_cache
        if self.ssm_state_vk:  # the ops take [S, HV, K, V]-shaped states: the free transposed view
            ssm_state = ssm_state.transpose(-1, -2)
        conv_window = conv_state[:, : self.conv_kernel_size - 1]  # [S, W-1, D] view
        num_actual = md.num_actual_tokens
        if num_actual < core_out.shape[0]:  # padded batch
            core_out[num_actual:].zero_()

        if md.spec_sequence_masks is not None:
            mixed = md.num_prefills > 0 or md.num_decodes > 0
            spec = md.spec_token_indx if mixed else slice(0, num_actual)
            out = self._verify(mixed_qkv[spec], b[spec], a[spec], conv_state, ssm_state, md)
            out = self._norm(out, z[spec])
            if not mixed:
                core_out[:num_actual] = out
                return
            core_out.index_copy_(0, md.spec_token_indx, out)
            rest = md.non_spec_token_indx
            out = self._prefill(mixed_qkv[rest], b[rest], a[rest], conv_window, ssm_state, md)
            core_out.index_copy_(0, rest, self._norm(out, z[rest]))
            return

        num_decode_tokens = md.num_decode_tokens
        if md.num_decodes > 0:
            tokens = slice(0, num_decode_tokens)
            core_out[tokens] = self._decode(
                mixed_qkv[tokens], z[tokens], b[tokens], a[tokens], conv_window, ssm_state,
                md.non_spec_state_indices_tensor[: md.num_decodes].contiguous(),
            )
        if md.num_prefills > 0:
            tokens = slice(num_decode_tokens, num_actual)
            out = self._prefill(mixed_qkv[tokens], b[tokens], a[tokens], conv_window, ssm_state, md)
            core_out[tokens] = self._norm(out, z[tokens])

    def _norm(self, o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return ops.gated_rms_norm(o, z, self.norm.weight, self.eps)

    def _decode(self, mixed_qkv, z, b, a, conv_state, ssm_state, slots):
        """One token per sequence, the whole step in one op (normalised output)."""
        return ops.gdn_decode(
            mixed_qkv, z, a, b, self.conv1d.weight, None, conv_state, self.A_log, self.dt_bias,
            self.norm.weight, self.eps, self.scale, ssm_state, slots, True,
        )

    def _prefill(self, mixed_qkv, b, a, conv_state, ssm_state, md):
        """Varlen chunks, each continuing its sequence's state when it has one."""
        # With speculative decoding vLLM's slots are a column of its [N, 1 + k] state-index
        # table (strided); the Triton launchers take contiguous indices.
        slots = md.prefill_state_indices.contiguous()
        x = ops.causal_conv1d_fwd(
            mixed_qkv,
            self.conv1d.weight,
            None,
            conv_state,
            md.prefill_query_start_loc,
            slots,
            md.prefill_has_initial_state,
            True,
        )
        q, k, v = self._split_qkv(x)
        g, beta = ops.gdn_gating(self.A_log, a, b, self.dt_bias)
        return ops.chunk_gated_delta_rule(
            q, k, v, g, beta, self.scale, ssm_state,
            md.prefill_query_start_loc,
            slots,
            md.prefill_has_initial_state,
            True,
        )

    def _verify(self, mixed_qkv, b, a, conv_state, ssm_state, md):
        """Speculative verification: 1 + k tokens per sequence, from the last accepted token."""
        n = md.num_spec_decodes
        cu_seqlens = md.spec_query_start_loc[: n + 1]
        slots = md.spec_state_indices_tensor[:n]  # [n, 1 + k]
        accepted = md.num_accepted_tokens[:n]
        x = ops.causal_conv1d_verify(
            mixed_qkv, self.conv1d.weight, None, conv_state, cu_seqlens, slots[:, 0].contiguous(),
            accepted, True,
        )
        q, k, v = self._split_qkv(x)
        g, beta = ops.gdn_gating(self.A_log, a, b, self.dt_bias)
        return ops.recurrent_gated_delta_rule_verify(
            q, k, v, g, beta, self.scale, ssm_state, cu_seqlens, slots, accepted, True
        )


def regroup_rows(
    loaded: torch.Tensor,
    dim: int,
    segments: list[int],
    num_groups: int,
    tp_rank: int = 0,
    tp_size: int = 1,
    what: str = "tensor",
) -> torch.Tensor:
    """Re-order a grouped projection tensor along its output axis ``dim``.

    The checkpoint's output rows come in ``num_groups`` key-head groups, each
    ``segments`` rows long (``[q, k, v, z]`` or ``[b, a]``); the result holds this
    rank's groups with each segment gathered: ``[q... | k... | v... | z...]``.
    Along ``dim`` a tensor may count rows in units (8 rows per packed int32, 128
    per block scale); every segment must then be a whole number of units.
    """
    rows = num_groups * sum(segments)
    length = loaded.shape[dim]
    unit = rows // length
    if unit * length != rows or any(size % unit for size in segments):
        raise ValueError(
            f"{what}: the checkpoint tensor has {length} entries along its output axis for "
            f"{rows} rows in {num_groups} groups of {segments}; its rows cannot be re-ordered "
            f"per key-head group (units of {rows / length:g} rows straddle the groups). Leave "
            "this projection unquantized (Qwen's FP8 checkpoints do), or serve the checkpoint "
            "with vLLM's built-in model (VLLM_PLUGINS=)."
        )
    moved = loaded.movedim(dim, 0)
    groups = moved.reshape(num_groups, length // num_groups, *moved.shape[1:])
    per_rank = num_groups // tp_size
    groups = groups[tp_rank * per_rank : (tp_rank + 1) * per_rank]
    parts = groups.split([size // unit for size in segments], dim=1)
    flat = torch.cat([part.reshape(-1, *moved.shape[1:]) for part in parts], dim=0)
    return flat.movedim(0, dim)


def qwen3next_gdn_core(
    mixed_qkv: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    core_out: torch.Tensor,
    layer_name: str,
) -> None:
    layer = get_forward_context().no_compile_layers[layer_name]
    # Below autograd: our ops' calls skip torch.library's Python autograd and
    # version-counter layers (the cache tensors are not inference tensors), which
    # on CPU cost more per call than a small decode step's kernels.
    with torch._C._AutoDispatchBelowADInplaceOrView():
        layer.forward_core(mixed_qkv, z, b, a, core_out)


def qwen3next_gdn_core_fake(
    mixed_qkv: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    core_out: torch.Tensor,
    layer_name: str,
) -> None:
    return None


# Reads the batch metadata and writes the state cache: it must stay opaque to
# torch.compile and be split out of CUDA graphs (see model.py).
GDN_CORE_OP = "vllm::qwen3next_gdn_core"
direct_register_custom_op(
    op_name="qwen3next_gdn_core",
    op_func=qwen3next_gdn_core,
    mutates_args=["core_out"],
    fake_impl=qwen3next_gdn_core_fake,
)
