"""The tests in this folder run the Triton kernels on CPU tensors under TRITON_INTERPRET=1. The variable must be
set before the kernels are defined, so test_triton_interpret.py runs this folder in a fresh process with it set;
a plain pytest run (without the variable) leaves these files alone."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for triton_checks

if os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore_glob = ["test_*.py"]
