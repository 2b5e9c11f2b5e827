"""Which implementation serves each op beyond the CPU one registered with it.

Each op folder's ops.py lists its CUDA backends (`CUDA_BACKENDS`: op -> {backend: "module:function"}, in order of
preference, measured on the H200: kernels/benchmarks/RESULTS_H200.md). `register()` picks, per op, the first listed
backend whose library is installed, or the one `QWEN3NEXT_KERNELS` forces, registers it for CUDA tensors and logs the
choice in one INFO line. Settings:

    QWEN3NEXT_KERNELS=triton                                    every op on our Triton kernels
    QWEN3NEXT_KERNELS=chunk_gated_delta_rule=fla,gdn_decode=triton   per op (others keep the default)
    (backends: triton = ours; fla = flash-linear-attention; flashinfer = FlashInfer, on Hopper and Blackwell GPUs)
    QWEN3NEXT_TRITON_CPU=1  (with TRITON_INTERPRET=1)           our Triton kernels also serve CPU tensors, so that
                                                                 a CPU engine runs the exact CUDA code path
"""
import functools
import importlib
import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

FORCE_ENV = "QWEN3NEXT_KERNELS"
TRITON_CPU_ENV = "QWEN3NEXT_TRITON_CPU"
# backend -> the module its kernels need, and the library (distribution's top module) that brings it
KERNEL_MODULES = {"triton": "triton", "fla": "fla.ops.gated_delta_rule", "flashinfer": "flashinfer.gdn_prefill"}
LIBRARIES = {backend: module.split(".")[0] for backend, module in KERNEL_MODULES.items()}
ARCHS = {"flashinfer": (9, 10, 12)}  # backend -> the compute-capability majors its kernels serve (others: any)


def _tables() -> dict[str, dict[str, str]]:
    from .conv.ops import CUDA_BACKENDS as conv
    from .gated_delta_rule.ops import CUDA_BACKENDS as gated_delta_rule
    from .gating.ops import CUDA_BACKENDS as gating
    from .norm.ops import CUDA_BACKENDS as norm

    return conv | gated_delta_rule | gating | norm


def _forced(ops: list[str]) -> dict[str, str]:
    setting = os.environ.get(FORCE_ENV, "").strip()
    if not setting:
        return {}
    if "=" not in setting:
        return dict.fromkeys(ops, setting)
    forced = dict(item.split("=", 1) for item in setting.split(","))
    unknown = sorted(set(forced) - set(ops))
    if unknown:
        raise ValueError(f"{FORCE_ENV} names unknown ops {unknown}; the ops are {sorted(ops)}")
    return forced


def installed(backend: str) -> bool:
    """The backend's kernels import and, where they serve only some GPUs, this one is among them."""
    if backend in ARCHS and not (torch.cuda.is_available()
                                 and torch.cuda.get_device_capability()[0] in ARCHS[backend]):
        return False
    return _importable(KERNEL_MODULES[backend])


@functools.cache
def _importable(module: str) -> bool:
    """module imports. A library that is installed but fails to import (a missing dependency of its own, say) is
    passed over with a warning naming the error, not chosen to fail at the first prefill."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001  (any import failure: the backend is unusable)
        logger.warning("%s is installed but does not import (%r): its kernels are not used", module, e)
        return False
    return True


def resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def choose(prefer: dict[str, list[str]] | None = None) -> dict[str, str]:
    """op -> backend name for CUDA tensors (ops without an installed backend are left out). prefer: op -> backends
    tried first, in order (a caller's setting, vLLM's --gdn-prefill-backend say); QWEN3NEXT_KERNELS still wins."""
    tables = _tables()
    forced = _forced(list(tables))
    chosen = {}
    for op, backends in tables.items():
        if op in forced:
            if forced[op] not in backends:
                raise ValueError(f"{FORCE_ENV}: op {op} has no backend {forced[op]!r} (it has {sorted(backends)})")
            if not installed(forced[op]):
                archs = f" (and a GPU of compute capability {ARCHS[forced[op]]}.x)" if forced[op] in ARCHS else ""
                raise ValueError(f"{FORCE_ENV}: backend {forced[op]!r} of {op} needs {LIBRARIES[forced[op]]!r}, "
                                 f"which is not installed{archs}")
            chosen[op] = forced[op]
        else:
            order = [*(prefer or {}).get(op, ()), *backends]
            first = next((name for name in order if name in backends and installed(name)), None)
            if first is not None:
                chosen[op] = first
    return chosen


def register(prefer: dict[str, list[str]] | None = None) -> None:
    """Register the chosen backend of every op for CUDA (where a GPU is present; prefer as in choose) and, under
    QWEN3NEXT_TRITON_CPU=1, our Triton kernels for CPU tensors."""
    triton_cpu = os.environ.get(TRITON_CPU_ENV) == "1"
    if not (torch.cuda.is_available() or triton_cpu):
        return
    tables = _tables()
    if torch.cuda.is_available():
        chosen = choose(prefer)
        for op, backend in chosen.items():
            _custom_op(op).register_kernel("cuda")(resolve(tables[op][backend]))
        logger.info("qwen3next_kernels: CUDA backends: %s", ", ".join(f"{op}={b}" for op, b in sorted(chosen.items())))
    if triton_cpu:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(f"{TRITON_CPU_ENV}=1 runs Triton kernels on CPU tensors: it needs TRITON_INTERPRET=1")
        for op, backends in tables.items():
            _custom_op(op).register_kernel("cpu")(resolve(backends["triton"]))
        logger.warning("qwen3next_kernels: %s=1: our Triton kernels serve CPU tensors (interpreted)", TRITON_CPU_ENV)


def _custom_op(op: str):
    from . import conv, gated_delta_rule, gating, norm

    for folder in (conv, gated_delta_rule, gating, norm):
        if hasattr(folder, op):
            return getattr(folder, op)
    raise KeyError(op)
