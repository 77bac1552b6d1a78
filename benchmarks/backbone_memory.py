"""The memory one ResNet-50 training step at 448 px needs, batch 32 (issue 34: recorded, not asserted).

A step of the SSB recipe (``mls-ssb``: ResNet-50, 448 px, batch 32, SGD with momentum) holds:

- the parameters, their gradients and the optimiser state (SGD momentum: one buffer per parameter;
  Adam: two), the same whatever the batch;
- the activations autograd saves in the forward for the backward, linear in the batch.

On CUDA the step is run at the full batch and ``torch.cuda.max_memory_allocated`` is read (it also
counts the backward's transient buffers and cuDNN workspaces). On the CPU the saved activations
are counted with ``torch.autograd.graph.saved_tensors_hooks`` (every distinct storage a saved tensor
lives in, parameters excluded, counted once) at ``--probe-batches`` (default 1 and 2, which fit a
small machine), checked to be linear in the batch, and extrapolated to ``--batch``; ``--probe-batches
32`` measures the full batch directly where memory allows (about 10 GB of float32 activations).
The backward's transient gradient buffers come on top of the CPU figure (at most about the largest
few activations at once).

Run: python benchmarks/backbone_memory.py [--device cuda] [--backbone resnet50|vit_b16] [--size 448]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from osrbench.models.backbones import make_network

GiB = 1024 ** 3


def state_bytes(net: nn.Module, optimizer: str) -> dict[str, int]:
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    per_param = {"sgd": 1, "adam": 2}[optimizer]
    return {"parameters": params, "buffers": buffers, "gradients": params, "optimizer": per_param * params}


def saved_activation_bytes(net: nn.Module, images: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one forward (parameters' storages excluded)."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept: dict[int, torch.Tensor] = {}  # holding them keeps each address one storage for the whole forward

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            kept.setdefault(ptr, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(images)
    total = sum(t.untyped_storage().nbytes() for t in kept.values())
    del out, kept
    return total


def cpu_estimate(args: argparse.Namespace, net: nn.Module) -> None:
    net.train()
    rows = []
    for b in args.probe_batches:
        x = torch.rand(b, 3, args.size, args.size)
        t0 = time.perf_counter()
        saved = saved_activation_bytes(net, x)
        rows.append((b, saved))
        print(f"batch {b:3d}: saved activations {saved / GiB:8.3f} GiB  ({time.perf_counter() - t0:.1f} s forward)")
    if len(rows) >= 2:
        (b0, s0), (b1, s1) = rows[0], rows[-1]
        per_image = (s1 - s0) / (b1 - b0)
        fixed = s0 - per_image * b0
        print(f"per image {per_image / 2**20:.1f} MiB, batch-independent {fixed / 2**20:.1f} MiB "
              f"(linear fit of batches {b0} and {b1})")
        for b, s in rows[1:-1]:
            print(f"  check: batch {b} predicted {(fixed + per_image * b) / GiB:.3f} GiB, measured {s / GiB:.3f} GiB")
        activations = fixed + per_image * args.batch
        how = f"extrapolated from batches {b0} and {b1}"
    else:
        (b0, s0), = rows
        activations = s0 * args.batch / b0
        how = f"measured at batch {b0}" + (f", scaled to {args.batch}" if b0 != args.batch else "")
    report(args, net, activations, how)


def report(args: argparse.Namespace, net: nn.Module, activations: float, how: str) -> None:
    state = state_bytes(net, args.optimizer)
    total = activations + sum(state.values())
    print(f"\n{args.backbone} training step, {args.size} px, batch {args.batch}, {args.optimizer} (float32):")
    for name, value in state.items():
        print(f"  {name:<18} {value / GiB:8.3f} GiB")
    print(f"  {'saved activations':<18} {activations / GiB:8.3f} GiB  ({how})")
    print(f"  {'total':<18} {total / GiB:8.3f} GiB")


def cuda_measure(args: argparse.Namespace, net: nn.Module) -> None:
    dev = torch.device(args.device)
    net = net.to(dev).train()
    opt = (torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9) if args.optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=1e-3))
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, net.num_classes, (args.batch,), device=dev)
    for step in range(2):  # the second step has the optimiser state allocated
        torch.cuda.reset_peak_memory_stats(dev)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        torch.cuda.synchronize(dev)
        print(f"step {step + 1}: torch.cuda.max_memory_allocated {torch.cuda.max_memory_allocated(dev) / GiB:.3f} GiB")
    activations = saved_activation_bytes(net, x)
    report(args, net, activations, "measured on the device")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="resnet50", choices=("resnet50", "vit_b16"))
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100, help="K of the head (CUB's SSB split: 100 known classes)")
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--probe-batches", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    torch.manual_seed(0)
    net = make_network(args.backbone, args.classes, image_size=args.size)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} thread(s)")
    if args.device.startswith("cuda"):
        cuda_measure(args, net)
    else:
        cpu_estimate(args, net)


if __name__ == "__main__":
    main()
