"""What the Forge backend's weight swap costs: ``host/forge/autograd.trainable`` entered and left
around each guidance pass, on an SD 1.5-size UNet whose weights were made in inference mode as
Forge loads them.

    python bench/forge_swap.py [--model-channels 320] [--repeats 5]

Prints the seconds to enter and leave the scope (every Parameter and buffer aliased, LayerNorm
pre-hooks added, then all put back) and the process's resident memory before, inside and after,
so the extra memory of the aliases shows (they share the weights' storage: no copy). Runs without
any WebUI: the scope's module is loaded by path (its package needs Forge).
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
AUTOGRAD = os.path.join(ROOT, "tsam_ext", "host", "forge", "autograd.py")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def inference_weights(module: torch.nn.Module) -> None:
    """Every Parameter and buffer re-made in inference mode, as Forge's loader makes them."""
    with torch.inference_mode():
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[name] = b.detach().clone()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-channels", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("forge_autograd", AUTOGRAD)
    autograd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(autograd)
    from tsam_ext.runtime import sd1

    unet = sd1.build(model_channels=args.model_channels, decoder=False, peaky=False).unet
    inference_weights(unet)
    tensors = sum(1 for m in unet.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
    size = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2 ** 20
    times, inside = [], []
    before = rss_mib()
    for _ in range(args.repeats):
        start = time.perf_counter()
        with autograd.trainable(unet):
            entered = time.perf_counter()
            inside.append(rss_mib())
            assert not any(p.is_inference() for p in unet.parameters())
        times.append((entered - start, time.perf_counter() - entered))
    after = rss_mib()
    assert all(p.is_inference() for p in unet.parameters()), "Forge's own weight objects are back"
    enter, leave = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    print(f"UNet: model_channels {args.model_channels}, {tensors} parameters and buffers, {size:,.0f} MiB of weights")
    print(f"swap in: {enter * 1000:.1f} ms, swap back: {leave * 1000:.1f} ms (median of {args.repeats}, per guidance pass)")
    print(f"resident memory: before {before:,.0f} MiB, inside {max(inside):,.0f} MiB (+{max(inside) - before:,.1f}), "
          f"after {after:,.0f} MiB")


if __name__ == "__main__":
    main()
