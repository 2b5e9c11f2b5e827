"""Qwen3-Next kernels: importing this package registers every op under torch.ops.qwen3next.*.

Notation, shared by every file of the package:
  T = total tokens of a varlen batch (sequences concatenated), N = sequences, B = sequences of a decode batch
  (one token each), Q = tokens of one verification sequence (1 + k drafts), C = state slots per verification row,
  S = state slots in the cache, D = conv channels (2 H K + HV V: q, then k, then v), W = conv width (4),
  L = conv state length (>= W - 1), H = key heads, HV = value heads (HV % H == 0; value head j reads key head
  j // (HV // H)), G = HV // H, K = key head dim, V = value head dim; h = one recurrent state [K, V].
  cu_seqlens: [N+1] int32 token offsets; state_indices: int32 slots, -1 (PAD_SLOT_ID) skips the sequence (no
  state read or written, outputs zeros); conv_states: [S, L, D]; ssm_states: [S, HV, K, V].
Each op folder holds naive.py (the reference), ops.py (schemas, fakes, the CPU implementation, the CUDA backends)
and one file per implementation (cpu / triton / library). This package never imports vLLM.
"""
# Absolute imports: with the repository root on sys.path, transformers' probe for the Hugging Face `kernels`
# package imports this folder as `kernels`; the ops must still be registered once, by qwen3next_kernels.
from qwen3next_kernels import backends
from qwen3next_kernels.conv import causal_conv1d_fwd, causal_conv1d_update, causal_conv1d_verify
from qwen3next_kernels.gated_delta_rule import (chunk_gated_delta_rule, fused_recurrent_gated_delta_rule, gdn_decode,
                                                recurrent_gated_delta_rule_verify)
from qwen3next_kernels.gating import gdn_gating
from qwen3next_kernels.norm import gated_rms_norm

__version__ = "0.1.0"

PAD_SLOT_ID = -1

__all__ = [
    "PAD_SLOT_ID",
    "causal_conv1d_fwd",
    "causal_conv1d_update",
    "causal_conv1d_verify",
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "gated_rms_norm",
    "gdn_decode",
    "gdn_gating",
    "recurrent_gated_delta_rule_verify",
]

backends.register()
