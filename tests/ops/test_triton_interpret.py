"""Runs the Triton kernels on CPU under TRITON_INTERPRET=1 (tests in interpret/), one fresh process per op family,
so CI without a GPU checks them too."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("family", ["conv", "gating_norm", "gated_delta_rule", "fused", "verify"])
def test_triton_interpreted(family):
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(HERE / "interpret" / f"test_interpret_{family}.py")],
                       env=env, capture_output=True, text=True, cwd=HERE.parent.parent, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
