"""GPU start-up: keep vLLM's Qwen GDN warm-up off our layers, and warm our own Triton kernels.

vLLM's GPU worker runs ``kernel_warmup`` before CUDA-graph capture. For ``model_type``
qwen3_next it calls ``vllm/model_executor/warmup/qwen_triton_warmup.py``, which finds GDN
layers in ``static_forward_context`` by attribute names (``_is_qwen_gdn_layer``). Our
``Qwen3NextGatedDeltaNet`` has all of them, so vLLM would read ``norm.norm_before_gate`` /
``norm.activation`` (which our layer lacks: AttributeError before serving starts) and divide
our per-rank head counts by the TP size a second time. Even with those fixed it would only
compile vLLM's own fla / causal-conv1d kernels, which our layer never calls. So vLLM's
detection is narrowed to skip our layers (vLLM then logs "no Qwen GDN layer found"), and
our kernels get their own warm-up instead:

``GDNTritonWarmup`` is a ``VllmJitKernel`` registered with vLLM's ``JitWarmupRegistry``
while the model is built (the GPU model runners build it inside ``registry.activate()``).
``kernel_warmup`` calls ``registry.warmup()`` (when ``enable_jit_warmup``, off with
``enforce_eager``) before CUDA-graph capture and before vLLM's JIT monitor starts to report
compilations. Each case calls the layer's own ``_prefill`` / ``_decode`` / ``_verify`` /
``_norm`` with the layer's weights and scratch states of the bound cache's per-slot shape,
strides and dtypes: token counts of 1, 2 and 16 (the integer cases Triton specialises on) and
sequence counts 1, 2, 4, ... up to max_num_seqs (the launchers choose block sizes and warps from
them in power-of-two buckets). The real cache is never written.

On CPU nothing registers unless the Triton-on-CPU switch (``QWEN3NEXT_TRITON_CPU=1``, with
``TRITON_INTERPRET=1``) makes our Triton implementations serve CPU tensors; vLLM's CPU
worker never runs the registry, so there the warm-up runs only when called (tests do).
"""

import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from qwen3next_kernels import backends
from vllm.logger import init_logger
from vllm.model_executor.warmup.jit_warmup import JitWarmupRegistry, VllmJitKernel

from vllm_qwen3next.layers.state import gdn_state_dtypes, gdn_state_shapes

logger = init_logger(f"vllm.{__name__}")

# (sequences, tokens each): token counts of 1, 2 and 16 (Triton's integer cases); 2 x 40 crosses a 64-token chunk.
PREFILL_CASES = ((1, 1), (1, 2), (1, 16), (2, 40))


def _powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... <= limit: the launchers pick block sizes from sequence counts in power-of-two buckets."""
    return [1 << i for i in range(max(limit, 1).bit_length())]


@dataclass(frozen=True)
class GDNGeometry:
    """What our GDN Triton kernels compile for: per-rank sizes, dtypes, per-slot state layout."""

    num_k_heads: int  # H on this rank
    num_v_heads: int  # HV on this rank
    head_k_dim: int
    head_v_dim: int
    conv_kernel_size: int
    act_dtype: torch.dtype
    conv_state: tuple  # (per-slot shape [L, D], strides of [S, L, D], dtype)
    ssm_state: tuple  # (per-slot shape [HV, K, V], strides of [S, HV, K, V], dtype)
    num_spec: int


@dataclass(frozen=True)
class GDNWarmupKey:
    geometry: GDNGeometry
    step: str  # "prefill" | "decode" | "verify"
    num_seqs: int
    tokens_per_seq: int


def _state_layout(cache: object, shape: tuple, dtype: torch.dtype) -> tuple:
    if isinstance(cache, torch.Tensor) and cache.numel() > 0:
        return tuple(cache.shape[1:]), tuple(cache.stride()), cache.dtype
    contiguous = torch.empty((1, *shape), dtype=dtype, device="meta").stride()
    return tuple(shape), tuple(contiguous), dtype


def layer_geometry(layer) -> GDNGeometry:
    """The layer's per-rank sizes and, once vLLM has bound the cache, its per-slot layout."""
    vllm_config = layer.vllm_config
    conv_shape, ssm_shape = gdn_state_shapes(vllm_config)
    conv_dtype, ssm_dtype = gdn_state_dtypes(vllm_config)
    conv_cache, ssm_cache = layer.kv_cache[:2]
    spec = vllm_config.speculative_config
    return GDNGeometry(
        num_k_heads=layer.num_k_heads,
        num_v_heads=layer.num_v_heads,
        head_k_dim=layer.head_k_dim,
        head_v_dim=layer.head_v_dim,
        conv_kernel_size=layer.conv_kernel_size,
        act_dtype=vllm_config.model_config.dtype,
        conv_state=_state_layout(conv_cache, conv_shape, conv_dtype),
        ssm_state=_state_layout(ssm_cache, ssm_shape, ssm_dtype),
        num_spec=spec.num_speculative_tokens if spec is not None else 0,
    )


def _scratch_state(layout: tuple, slots: int, device: torch.device) -> torch.Tensor:
    shape, stride, dtype = layout
    return torch.empty_strided((slots, *shape), stride, dtype=dtype, device=device).zero_()


def _int32(values, device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.int32, device=device)


class GDNTritonWarmup(VllmJitKernel[GDNWarmupKey]):
    """Runs each op our GDN layer calls once per warm-up case (see the module docstring)."""

    CompileKey = GDNWarmupKey

    def __init__(self) -> None:
        super().__init__()
        self._layers: dict[GDNGeometry, object] = {}  # one layer per geometry: its weights
        self.cases_run: list[GDNWarmupKey] = []

    def get_warmup_keys(self, layer) -> list[GDNWarmupKey]:
        geometry = layer_geometry(layer)
        self._layers.setdefault(geometry, layer)
        scheduler = layer.vllm_config.scheduler_config
        batches = _powers_of_two(min(scheduler.max_num_seqs, scheduler.max_num_batched_tokens))
        keys = [GDNWarmupKey(geometry, "prefill", n, t) for n, t in PREFILL_CASES
                if n * t <= scheduler.max_num_batched_tokens]
        keys += [GDNWarmupKey(geometry, "prefill", n, 1) for n in batches if n > 2]
        keys += [GDNWarmupKey(geometry, "decode", b, 1) for b in batches]
        if geometry.num_spec > 0:
            per_seq = 1 + geometry.num_spec
            keys += [GDNWarmupKey(geometry, "verify", n, per_seq) for n in batches
                     if n * per_seq <= scheduler.max_num_batched_tokens]
        return list(dict.fromkeys(keys))

    @torch.inference_mode()
    def compile(self, compile_key: GDNWarmupKey) -> None:
        g = compile_key.geometry
        layer = self._layers[g]
        device = layer.A_log.device
        n, per_seq = compile_key.num_seqs, compile_key.tokens_per_seq
        num_tokens = n * per_seq
        # Two scratch slots whatever the batch (sequences share them: the results are not read),
        # so that the warm-up needs next to no memory beside the allocated cache.
        slots = 2
        conv_state = _scratch_state(g.conv_state, slots, device)  # [S, L, D]
        ssm_state = _scratch_state(g.ssm_state, slots, device)  # [S, HV, K, V]
        conv_window = conv_state[:, : g.conv_kernel_size - 1]
        # The projection outputs as forward() splits them: row-strided views.
        conv_dim = 2 * g.num_k_heads * g.head_k_dim + g.num_v_heads * g.head_v_dim
        qkvz = torch.zeros(num_tokens, conv_dim + g.num_v_heads * g.head_v_dim, dtype=g.act_dtype, device=device)
        mixed_qkv, z = qkvz.split([conv_dim, g.num_v_heads * g.head_v_dim], dim=-1)
        z = z.reshape(num_tokens, g.num_v_heads, g.head_v_dim)
        ba = torch.zeros(num_tokens, 2 * g.num_v_heads, dtype=g.act_dtype, device=device)
        b, a = ba.split([g.num_v_heads, g.num_v_heads], dim=-1)
        starts = _int32(range(0, num_tokens + 1, per_seq), device)
        if compile_key.step == "prefill":
            md = SimpleNamespace(
                prefill_query_start_loc=starts,
                prefill_state_indices=_int32([i % slots for i in range(n)], device),
                prefill_has_initial_state=torch.ones(n, dtype=torch.bool, device=device),
            )
            layer._norm(layer._prefill(mixed_qkv, b, a, conv_window, ssm_state, md), z)
        elif compile_key.step == "decode":
            layer._decode(mixed_qkv, z, b, a, conv_window, ssm_state, _int32([i % slots for i in range(n)], device))
        else:
            md = SimpleNamespace(
                num_spec_decodes=n,
                spec_query_start_loc=starts,
                spec_state_indices_tensor=_int32([i % slots for i in range(num_tokens)], device).view(n, per_seq),
                num_accepted_tokens=torch.ones(n, dtype=torch.int32, device=device),
            )
            layer._norm(layer._verify(mixed_qkv, b, a, conv_state, ssm_state, md), z)
        self.cases_run.append(compile_key)

    def compile_many(self, compile_keys) -> None:
        keys = list(compile_keys)
        t0 = time.perf_counter()
        super().compile_many(keys)
        devices = {self._layers[k.geometry].A_log.device for k in keys}
        for device in devices:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        geometries = {k.geometry for k in keys}
        logger.info(
            "vllm_qwen3next: warmed up the GDN Triton kernels, %d cases (prefill, decode%s) for %s in %.1f s",
            len(keys),
            ", verify" if any(k.step == "verify" for k in keys) else "",
            "; ".join(
                f"H={g.num_k_heads} HV={g.num_v_heads} K={g.head_k_dim} V={g.head_v_dim} per rank" for g in geometries
            ),
            time.perf_counter() - t0,
        )


GDN_TRITON_WARMUP = GDNTritonWarmup()


def triton_serves(device_type: str) -> bool:
    """Whether our Triton implementations run for tensors of this device type."""
    if device_type == "cuda":
        return True
    return device_type == "cpu" and os.environ.get(backends.TRITON_CPU_ENV) == "1"


def skip_layers_in_vllm_qwen_warmup(layer_class: type) -> None:
    """Narrow vLLM's Qwen GDN warm-up layer detection so that it skips ``layer_class``."""
    from vllm.model_executor.warmup import qwen_triton_warmup as vllm_warmup

    detect = getattr(vllm_warmup, "_is_qwen_gdn_layer", None)
    if detect is None or getattr(detect, "skips", None) is layer_class:
        return

    def _is_qwen_gdn_layer(module: object) -> bool:
        return not isinstance(module, layer_class) and detect(module)

    _is_qwen_gdn_layer.skips = layer_class
    _is_qwen_gdn_layer.__wrapped__ = detect
    vllm_warmup._is_qwen_gdn_layer = _is_qwen_gdn_layer
    logger.info(
        "vllm_qwen3next: vLLM's Qwen GDN Triton warm-up skips our %s layers (it would read attributes "
        "they lack and warm kernels they never call); our own warm-up covers them",
        layer_class.__name__,
    )


def register_layer(layer, device_type: str) -> None:
    """Called by each GDN layer's constructor."""
    skip_layers_in_vllm_qwen_warmup(type(layer))
    if triton_serves(device_type):
        JitWarmupRegistry.register(GDN_TRITON_WARMUP, layer)
