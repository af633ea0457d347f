"""k-diffusion's ``sampling`` and ``external`` modules, also where torchvision is missing.

k-diffusion 0.0.16 (the release A1111 1.10.1 pins) imports every submodule from its package
``__init__`` (training needs scikit-image, clean-fid, ...), and ``utils`` imports torchvision
for two PIL converters that the samplers never call (``isolated`` explains the loading).
"""

from .isolated import load as load_isolated, unavailable


def load():
    """(k_diffusion.sampling, k_diffusion.external), the real modules."""
    _utils, sampling, external = load_isolated(
        "k_diffusion", ["utils", "sampling", "external"],
        {"torchvision.transforms.functional": {"to_tensor": unavailable, "to_pil_image": unavailable}})
    return sampling, external
