"""Fixes of vLLM faults that every user of this model meets, installed from the plugin only where vLLM has
the fault (one file per fault; each checks for vLLM's broken piece before replacing it, and a test asserts
vLLM's own fault so that it fails once vLLM fixes it)."""
