import pytest
import torch


@pytest.fixture(scope="module")
def forge(small_sd):
    """The Forge stand-in with T-SAM installed, for one test module (then the A1111 one again)."""
    from forge_host import ForgeHost, ForgeWebUI

    with ForgeHost():
        yield ForgeWebUI(small_sd)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
