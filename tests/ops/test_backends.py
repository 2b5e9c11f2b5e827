"""qwen3next_kernels.backends: which implementation serves each op (the first installed CUDA backend, or the one
QWEN3NEXT_KERNELS forces), its errors, the CPU ops without Triton, and QWEN3NEXT_TRITON_CPU=1."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from utils import opcheck_args

from qwen3next_kernels import backends

# the ops vllm_qwen3next calls
MODEL_OPS = ["causal_conv1d_fwd", "causal_conv1d_verify", "chunk_gated_delta_rule", "recurrent_gated_delta_rule_verify",
             "gdn_decode", "gdn_gating", "gated_rms_norm"]
ALL_OPS = sorted(backends._tables())


@pytest.fixture
def installed(monkeypatch):
    """installed(*libraries): pretend exactly these backend libraries are installed; no QWEN3NEXT_KERNELS."""
    monkeypatch.delenv(backends.FORCE_ENV, raising=False)
    return lambda *names: monkeypatch.setattr(backends, "installed", lambda backend: backend in names)


def first_of(*names):
    return {op: next(b for b in table if b in names) for op, table in backends._tables().items()}


def test_choose_takes_the_first_installed_backend(installed):
    installed("triton", "fla", "flashinfer")
    chosen = backends.choose()
    assert chosen == first_of("triton", "fla", "flashinfer")
    assert chosen["chunk_gated_delta_rule"] == "flashinfer" and chosen["gdn_decode"] == "triton"
    installed("triton", "fla")
    assert backends.choose()["chunk_gated_delta_rule"] == "fla"
    installed("triton")
    assert backends.choose() == dict.fromkeys(ALL_OPS, "triton")
    installed()
    assert backends.choose() == {}


@pytest.mark.parametrize(("capability", "usable"), [((8, 0), False), ((9, 0), True), ((10, 0), True), ((12, 0), True)])
def test_flashinfer_only_on_the_gpus_its_kernels_serve(monkeypatch, capability, usable):
    """FlashInfer's GDN prefill runs on Hopper and Blackwell: elsewhere the next backend (fla) is chosen, and forcing
    it names the GPUs it needs."""
    monkeypatch.delenv(backends.FORCE_ENV, raising=False)
    monkeypatch.setattr(backends, "_importable", lambda module: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert backends.installed("flashinfer") is usable and backends.installed("fla")
    assert backends.choose()["chunk_gated_delta_rule"] == ("flashinfer" if usable else "fla")
    monkeypatch.setenv(backends.FORCE_ENV, "chunk_gated_delta_rule=flashinfer")
    if usable:
        assert backends.choose()["chunk_gated_delta_rule"] == "flashinfer"
    else:
        with pytest.raises(ValueError, match=r"needs 'flashinfer', which is not installed \(and a GPU of compute "
                                             r"capability \(9, 10, 12\)\.x\)"):
            backends.choose()


def test_force_every_op(installed, monkeypatch):
    installed("triton", "fla")
    monkeypatch.setenv(backends.FORCE_ENV, "triton")
    assert backends.choose() == dict.fromkeys(ALL_OPS, "triton")


def test_force_one_op(installed, monkeypatch):
    installed("triton", "fla")
    monkeypatch.setenv(backends.FORCE_ENV, "chunk_gated_delta_rule=triton,gdn_decode=triton")
    chosen = backends.choose()
    assert chosen["chunk_gated_delta_rule"] == "triton"
    assert chosen == first_of("triton", "fla") | chosen


@pytest.mark.parametrize(("setting", "error"), [
    ("no_such_op=triton", r"names unknown ops \['no_such_op'\]"),
    ("gdn_gating=fla", "op gdn_gating has no backend 'fla'"),
    ("cutlass", "has no backend 'cutlass'"),
    ("chunk_gated_delta_rule=fla", "backend 'fla' of chunk_gated_delta_rule needs 'fla', which is not installed"),
], ids=["unknown_op", "unknown_backend_of_op", "unknown_backend", "not_installed"])
def test_force_errors(installed, monkeypatch, setting, error):
    installed("triton")
    monkeypatch.setenv(backends.FORCE_ENV, setting)
    with pytest.raises(ValueError, match=error):
        backends.choose()


def run_python(code: str, **env) -> str:
    """Runs code in a fresh interpreter with this one's sys.path and no GPU; returns its stdout."""
    env = {n: v for n, v in os.environ.items() if n not in (backends.FORCE_ENV, backends.TRITON_CPU_ENV,
                                                             "TRITON_INTERPRET")} | env
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r.stdout


def test_cpu_ops_without_triton(tmp_path):
    """With `import triton` failing, importing the package registers every op, and each runs on CPU with the
    results of this process."""
    assert set(MODEL_OPS) <= set(ALL_OPS)
    run_python(f"""
import importlib.abc, sys

class NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ImportError(f"{{name}} is blocked")

sys.meta_path.insert(0, NoTriton())
import torch
import qwen3next_kernels
from utils import opcheck_args

outputs = {{op: getattr(torch.ops.qwen3next, op)(*opcheck_args(op)[0]) for op in {ALL_OPS!r}}}
assert not [m for m in sys.modules if m.split(".")[0] == "triton"]
torch.save(outputs, {str(tmp_path / "outputs.pt")!r})
""")
    outputs = torch.load(tmp_path / "outputs.pt")
    assert sorted(outputs) == ALL_OPS
    for op in ALL_OPS:
        torch.testing.assert_close(outputs[op], getattr(torch.ops.qwen3next, op)(*opcheck_args(op)[0]), rtol=0,
                                   atol=0, msg=op)


def test_triton_cpu_dispatches_to_the_triton_kernels():
    """Under QWEN3NEXT_TRITON_CPU=1 TRITON_INTERPRET=1 every op on CPU tensors launches our Triton kernel (counted
    by the interpreter's launch), and the CPU implementation called directly launches none."""
    pytest.importorskip("triton")
    out = run_python(f"""
import torch
import qwen3next_kernels
from qwen3next_kernels.gating.cpu import gdn_gating_cpu
from triton.runtime.interpreter import InterpretedFunction
from utils import opcheck_args

launched = []
run = InterpretedFunction.run
InterpretedFunction.run = lambda self, *args, **kwargs: launched.append(self.fn.__name__) or run(self, *args, **kwargs)
for op in {ALL_OPS!r}:
    getattr(torch.ops.qwen3next, op)(*opcheck_args(op)[0])
    print(op, launched)
    launched.clear()
gdn_gating_cpu(*opcheck_args("gdn_gating")[0])
print("cpu", launched)
""", QWEN3NEXT_TRITON_CPU="1", TRITON_INTERPRET="1")
    launches = dict(line.split(" ", 1) for line in out.splitlines())
    assert sorted(set(launches) - {"cpu"}) == ALL_OPS and launches["cpu"] == "[]", out
    for op in ALL_OPS:
        assert "_kernel" in launches[op], (op, launches[op])
    assert launches["gdn_gating"] == "['gdn_gating_fwd_kernel']" and "gdn_decode_kernel" in launches["gdn_decode"]


def test_a_library_that_does_not_import_is_passed_over(monkeypatch, caplog):
    """Installed (find_spec finds it) but broken (its import raises: FlashInfer without its CuTe DSL, say): not
    chosen, and the warning names the error."""
    monkeypatch.delenv(backends.FORCE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())

    def import_module(name):
        if name.startswith("flashinfer"):
            raise ModuleNotFoundError("No module named 'cutlass.cute'")
        return object()

    monkeypatch.setattr(backends.importlib, "import_module", import_module)
    backends._importable.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=backends.__name__):
            assert backends.choose()["chunk_gated_delta_rule"] == "fla"
    finally:
        backends._importable.cache_clear()
    assert "flashinfer.gdn_prefill is installed but does not import" in caplog.text and "cutlass.cute" in caplog.text


def test_prefer_reorders_one_op_and_the_forcing_variable_wins(installed, monkeypatch):
    """choose(prefer): the named backends first, where installed (vLLM's --gdn-prefill-backend triton maps to
    ["fla", "triton"]); other ops untouched; QWEN3NEXT_KERNELS naming the op wins."""
    installed("triton", "fla", "flashinfer")
    prefer = {"chunk_gated_delta_rule": ["fla", "triton"]}
    assert backends.choose(prefer)["chunk_gated_delta_rule"] == "fla"
    assert backends.choose(prefer)["gdn_decode"] == backends.choose()["gdn_decode"] == "triton"
    installed("triton", "flashinfer")
    assert backends.choose(prefer)["chunk_gated_delta_rule"] == "triton"
    assert backends.choose({"chunk_gated_delta_rule": ["cutedsl"]})["chunk_gated_delta_rule"] == "flashinfer"
    monkeypatch.setenv(backends.FORCE_ENV, "chunk_gated_delta_rule=flashinfer")
    assert backends.choose(prefer)["chunk_gated_delta_rule"] == "flashinfer"
