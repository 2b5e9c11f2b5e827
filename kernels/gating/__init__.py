from .naive import naive_gdn_gating
from .ops import gdn_gating

__all__ = ["gdn_gating", "naive_gdn_gating"]
