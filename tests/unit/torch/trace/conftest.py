import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared 2-core runner: extra threads only add contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
