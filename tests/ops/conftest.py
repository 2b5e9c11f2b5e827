"""Fixtures of the op tests. They need `qwen3next_kernels` importable (installed, or a site dir with a symlink to
kernels/ on PYTHONPATH, as kernels/benchmarks/device_run.sh makes) and never import vLLM."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from unittest import mock

import pytest
import torch

pytest.register_assert_rewrite("utils")
import utils  # noqa: E402


@pytest.fixture(autouse=True)
def nan_filled_empty():
    """utils.seed_and_nan_fill around every test."""
    previous = torch.are_deterministic_algorithms_enabled()
    utils.seed_and_nan_fill()
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture(scope="session")
def interpreter():
    """One worker process for the session, started with TRITON_INTERPRET=1: Triton reads the variable when a kernel
    is defined, so it must be set before the kernels are imported, which this process may have done already."""
    with mock.patch.dict(os.environ, TRITON_INTERPRET="1"):
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool.submit(int).result()  # starts the worker while the variable is set
    yield pool
    pool.shutdown()


@pytest.fixture
def run(request):
    """run(check, device, *args): check(device, *args) here, or in the interpreter's worker for device "interpret"."""
    def run(check, device, *args, **kwargs):
        if device == "interpret":
            pool = request.getfixturevalue("interpreter")
            return pool.submit(utils.fresh_state, check, device, *args, **kwargs).result()
        return check(device, *args, **kwargs)
    return run
