"""Registers the Triton (CUDA) implementations of every qwen3next op. Imported by the package when Triton is
installed; the CPU implementations stay registered either way."""
from .conv import triton_conv  # noqa: F401
from .conv import triton_verify as triton_conv_verify  # noqa: F401
from .gated_delta_rule import triton_chunk, triton_fused, triton_recurrent  # noqa: F401
from .gated_delta_rule import triton_verify as triton_gdr_verify  # noqa: F401
from .gating import triton_gating  # noqa: F401
from .norm import triton_norm  # noqa: F401
