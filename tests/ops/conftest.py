import pytest
import torch


@pytest.fixture(autouse=True)
def nan_filled_empty():
    """Fixed seed, and torch.empty returns NaN-filled memory, so an output the kernel leaves unwritten fails loudly."""
    torch.manual_seed(0)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(previous)
