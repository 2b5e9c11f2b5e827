"""Builds .anchors/: copies of vLLM's own Triton kernels for this model (its packed recurrent decode, its
spec-decode recurrence, its causal conv1d prefill and update) with a shim for the few vLLM helpers they import, so
that bench_h200.py can time them on a GPU machine without vLLM, and earlier versions of our own kernels (PREVIOUS,
from git). The copies are never part of this repository (.anchors/ is ignored); vLLM's come from the vLLM installed
here:

    python kernels/benchmarks/make_anchors.py [--out .anchors]
"""
import argparse
import shutil
from pathlib import Path

FILES = [
    "third_party/flash_linear_attention/ops/fused_recurrent.py",
    "third_party/flash_linear_attention/ops/op.py",
    "third_party/flash_linear_attention/ops/utils.py",
    "model_executor/layers/mamba/ops/causal_conv1d.py",
]
SHIMS = {
    "triton_utils/__init__.py": (
        "import triton\nimport triton.language as tl\nimport triton.language.extra.libdevice as tldevice\n"
    ),
    "platforms/__init__.py": (
        "class _Platform:\n"
        "    def is_cuda_alike(self): return True\n"
        "    def is_cuda(self): return True\n"
        "    def is_rocm(self): return False\n"
        "    def is_xpu(self): return False\n"
        "    def is_cpu(self): return False\n"
        "    def is_arch_support_pdl(self):  # as vLLM's CudaPlatform: compute capability 9 or newer\n"
        "        import torch\n"
        "        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9\n\n\n"
        "current_platform = _Platform()\n"
    ),
    "v1/attention/backends/utils.py": "NULL_BLOCK_ID = 0\nPAD_SLOT_ID = -1\n",
}


# Earlier versions of our own kernels, timed beside the current ones on the same card: module name -> (commit, file)
PREVIOUS = {"conv_triton_15027ea": ("15027ea", "kernels/conv/triton.py")}


def write_previous(out: Path) -> None:
    """Our kernels as they were at a commit, importable on their own (the package-relative imports made absolute)."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    out.mkdir(parents=True, exist_ok=True)
    for name, (rev, path) in PREVIOUS.items():
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, check=True, capture_output=True,
                              text=True).stdout
        (out / f"{name}.py").write_text(text.replace("from ..utils", "from qwen3next_kernels.utils"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / ".anchors"))
    args = p.parse_args()
    write_previous(Path(args.out))
    import importlib.util

    src = Path(importlib.util.find_spec("vllm").submodule_search_locations[0])
    out = Path(args.out) / "vllm"
    shutil.rmtree(out, ignore_errors=True)
    for rel in FILES:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dst)
    for rel, text in SHIMS.items():
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
    for d in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    print(f"anchors from {src} -> {out}")


if __name__ == "__main__":
    main()
