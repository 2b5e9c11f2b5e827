from .naive import naive_gated_rms_norm
from .ops import gated_rms_norm

__all__ = ["gated_rms_norm", "naive_gated_rms_norm"]
