from .naive import naive_causal_conv1d_fwd, naive_causal_conv1d_update, naive_causal_conv1d_verify
from .ops import causal_conv1d_fwd, causal_conv1d_update, causal_conv1d_verify

__all__ = [
    "causal_conv1d_fwd",
    "causal_conv1d_update",
    "causal_conv1d_verify",
    "naive_causal_conv1d_fwd",
    "naive_causal_conv1d_update",
    "naive_causal_conv1d_verify",
]
