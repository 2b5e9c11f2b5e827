"""The C++ CPU kernels (csrc/gdn_decode_cpu.cpp): built on first use with torch's extension builder, cached, loaded
as torch.ops.qwen3next_cpu.*. Where they cannot be built (no compiler), the CPU ops keep their PyTorch path.

Built on first use rather than at install, so that `pip install` stays pure Python (building at install would need
torch inside pip's isolated build environment). The build takes about 10 s of CPU once per machine; the cache is
torch's (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), keyed by the source and the flags, and one build
is shared by concurrent processes (torch's file lock). QWEN3NEXT_CPU_EXT=0 turns the C++ path off.
"""
import hashlib
import logging
import os
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "gdn_decode_cpu.cpp"
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-std=c++17"]

_lock = threading.Lock()
_state: dict = {}


def _cpu_tag() -> str:
    """-march=native code must not be reused on another CPU sharing the cache: the name carries the CPU's flags."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        flags = torch.backends.cpu.get_cpu_capability()
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def available() -> bool:
    """Build (once) and load the kernels; False, with one warning, where that fails or QWEN3NEXT_CPU_EXT=0."""
    if "ok" in _state:
        return _state["ok"]
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _load()
    return _state["ok"]


def _load() -> bool:
    if os.environ.get("QWEN3NEXT_CPU_EXT", "1") == "0":
        return False
    try:
        from torch.utils import cpp_extension

        cpp_extension.load(name=f"qwen3next_cpu_{_cpu_tag()}", sources=[str(SOURCE)], extra_cflags=CFLAGS,
                           is_python_module=False, verbose=False)
        return hasattr(torch.ops.qwen3next_cpu, "gdn_decode")
    except Exception as e:  # no compiler, no ninja, a failed build: the PyTorch path still works
        logger.warning("qwen3next_kernels: C++ CPU kernels unavailable, using the PyTorch path (%s: %s)",
                       type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return False
