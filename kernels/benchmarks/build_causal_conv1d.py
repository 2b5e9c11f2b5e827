"""Builds causal-conv1d's CUDA forward and update kernels from its sdist, for the benchmark's anchors only.

    python kernels/benchmarks/build_causal_conv1d.py SDIST.tar.gz OUT_DIR

On the GPU machine (nvcc, torch; no network), for sm_90 alone and without the backward kernels (the sdist's setup.py
builds every architecture from sm_75 up, and the backward too: several times longer). OUT_DIR then holds the
`causal_conv1d` package and its `causal_conv1d_cuda` extension: put it on sys.path. The package is never part of
this repository.
"""
import os
import re
import shutil
import sys
import tarfile
import tempfile

from torch.utils.cpp_extension import load


def main(sdist, out):
    src = tempfile.mkdtemp()
    with tarfile.open(sdist) as t:
        t.extractall(src, filter="data")
    root = os.path.join(src, os.listdir(src)[0])
    cpp = os.path.join(root, "csrc", "causal_conv1d.cpp")
    text = open(cpp).read()
    # drop the backward entry point (its kernels are not built) and its binding
    text = re.sub(r"\nvoid\ncausal_conv1d_bwd\(.*?\n}\n", "\n", text, count=1, flags=re.S)
    text = re.sub(r'\n\s*m\.def\("causal_conv1d_bwd".*?\n', "\n", text)
    assert "causal_conv1d_bwd(" not in text.split("PYBIND11_MODULE")[1], "backward binding still there"
    open(cpp, "w").write(text)
    os.makedirs(out, exist_ok=True)
    build = os.path.join(out, "build")
    os.makedirs(build, exist_ok=True)
    load(name="causal_conv1d_cuda", sources=[cpp] + [os.path.join(root, "csrc", f) for f in (
        "causal_conv1d_fwd.cu", "causal_conv1d_update.cu")], build_directory=build, verbose=False,
         extra_include_paths=[os.path.join(root, "csrc")], extra_cflags=["-O3"],
         extra_cuda_cflags=["-O3", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda",
                            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
                            "-gencode", "arch=compute_90,code=sm_90"])
    for f in os.listdir(build):
        if f.endswith(".so"):
            shutil.copy(os.path.join(build, f), out)
    shutil.rmtree(os.path.join(out, "causal_conv1d"), ignore_errors=True)
    shutil.copytree(os.path.join(root, "causal_conv1d"), os.path.join(out, "causal_conv1d"))
    print("built", sorted(os.listdir(out)))


if __name__ == "__main__":
    main(*sys.argv[1:])
