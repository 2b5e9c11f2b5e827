from .naive import (naive_fused_recurrent_gated_delta_rule, naive_recurrent_gated_delta_rule,
                    naive_recurrent_gated_delta_rule_verify)
from .ops import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule, gdn_decode, recurrent_gated_delta_rule_verify

__all__ = [
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "gdn_decode",
    "naive_fused_recurrent_gated_delta_rule",
    "naive_recurrent_gated_delta_rule",
    "naive_recurrent_gated_delta_rule_verify",
    "recurrent_gated_delta_rule_verify",
]
