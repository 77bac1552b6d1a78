"""Fused and foreach optimiser steps against the for-loop ones: equal bit for bit, and how many kernels?

Issue 26 asks for fused or foreach optimiser steps where they are bitwise-equal. The optimisers the
built-in methods step, over the parameters they step (Classifier32's and the 32-px DCGAN
generator's): SGD with momentum 0.9 and weight decay 5e-4 (the classifiers'), Adam with betas
(0.5, 0.999) (the GANs'; capturable on CUDA, as CUDA graphs make it), 20 steps on seeded
gradients in float32, each implementation from the same start. Printed: whether the parameters
and optimiser state equal the for-loop's (the releases' PyTorch 1.x ran for-loop steps) bit for
bit, the largest difference, and the kernels one step dispatches (``benchmarks/kernels.py``).
Run: python benchmarks/optimizer_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import kernels  # noqa: E402
from osrbench.models import Classifier32  # noqa: E402
from osrbench.models.dcgan import Generator  # noqa: E402

IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
STEPS = 20


def make(kind: str, params: list[torch.Tensor], impl: str, device: torch.device) -> torch.optim.Optimizer:
    flags = dict(IMPLEMENTATIONS[impl])
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, **flags)
    if device.type == "cuda" and impl != "fused":  # fused keeps its step count on the device anyway
        flags["capturable"] = True
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), **flags)


def trained(kind: str, net: torch.nn.Module, impl: str, device: torch.device):
    """The parameters and optimiser state after :data:`STEPS` steps, and one steady step's kernels."""
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    opt = make(kind, params, impl, device)
    g = torch.Generator(device).manual_seed(1)

    def step() -> None:
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, device=device)
        opt.step()

    for _ in range(STEPS - 1):
        step()
    for p in params:  # the counted step's gradients are drawn outside the counter
        p.grad = torch.randn(p.shape, generator=g, device=device)
    _, counted = kernels.count(opt.step, device)
    state = [t for p in params for t in (p.detach(), *(v for k, v in opt.state[p].items() if k != "step"))]
    return state, counted.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(parser.parse_args().device)
    torch.manual_seed(0)
    nets = {"sgd": ("Classifier32", Classifier32(6).to(device)), "adam": ("DCGAN Generator (32 px)", Generator().to(device))}
    rows = []
    for kind, (net_name, net) in nets.items():
        reference, _ = trained(kind, net, "for-loop", device)
        for impl in IMPLEMENTATIONS:
            try:
                state, n = trained(kind, net, impl, device)
            except (RuntimeError, AssertionError) as exc:  # fused is missing for some device and dtype
                rows.append([kind, net_name, impl, "-", "-", f"unavailable: {str(exc).splitlines()[0][:60]}"])
                continue
            equal = all(torch.equal(a, b) for a, b in zip(reference, state))
            worst = max(float((a.double() - b.double()).abs().max()) for a, b in zip(reference, state))
            rows.append([kind, net_name, impl, "yes" if equal else "no", f"{worst:.3g}", n])
    print(f"optimiser steps against for-loop ({STEPS} steps, float32, {device}, torch {torch.__version__})")
    print(tabulate(rows, headers=["optimiser", "parameters of", "steps", "bitwise equal", "largest difference",
                                  "kernels per step"], disable_numparse=True))


if __name__ == "__main__":
    main()
