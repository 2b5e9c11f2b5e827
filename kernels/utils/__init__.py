"""Helpers shared by more than one op folder: `cpu` (PyTorch) and `triton` (jit functions, launch helpers)."""
