"""Qwen3-Next kernels: importing this package registers every op under torch.ops.qwen3next.*.

Shape legend, shared by every docstring:
  T = total tokens of a varlen batch (sequences concatenated), N = number of sequences,
  B = sequences of a decode batch (one token each), S = number of state slots in the cache,
  D = conv channels, W = conv width (4), L = conv state length (>= W - 1),
  H = key heads, HV = value heads (HV % H == 0; value head j reads key head j // (HV // H)),
  K = key head dim, V = value head dim.
Index tensors are int32; a slot index of -1 (PAD_SLOT_ID) skips the sequence: no state read or written,
outputs zeros. This package never imports vLLM.
"""
# Absolute imports: with the repository root on sys.path, transformers' probe for the Hugging Face `kernels`
# package imports this folder as `kernels`; the ops must still be registered once, by qwen3next_kernels.
from qwen3next_kernels.conv import causal_conv1d_fwd, causal_conv1d_update
from qwen3next_kernels.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
from qwen3next_kernels.gating import gdn_gating
from qwen3next_kernels.norm import gated_rms_norm

__version__ = "0.1.0"

PAD_SLOT_ID = -1

__all__ = [
    "PAD_SLOT_ID",
    "causal_conv1d_fwd",
    "causal_conv1d_update",
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "gated_rms_norm",
    "gdn_gating",
]

try:  # the Triton (CUDA) implementations, registered under the same op names
    import triton  # noqa: F401
except ImportError:
    pass
else:
    import qwen3next_kernels.cuda  # noqa: F401
