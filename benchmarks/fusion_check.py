"""The ceiling of horizontal fusion (HFTA, arXiv 2102.02344) for classifier32 at batch 64, measured
before building it into packs (issue 26, step 3).

N classifier32 training steps (forward, cross-entropy, backward, SGD with momentum and weight
decay) as N separate networks, against one network of N groups: every convolution grouped by run
(``groups=N``), every BatchNorm over the N runs' channels (per-channel batch statistics are each
run's own), LeakyReLU and Dropout2d over all channels, a batched head. SGD is elementwise, so one
optimiser over the grouped parameters steps each run as its own optimiser would. Before timing,
the grouped step's gradients and running statistics are checked against the N separate ones
(dropout off: fused dropout draws other masks than N runs alone would, which a fused pack must
still solve). Each way is timed eager and, on CUDA, replayed from one CUDA graph of the whole
step (the N separate steps in one graph: a pack's best case without overlap).

It is an upper bound for DIAS: only a classifier's step, no GAN, no second network, no per-run
random order. Run: python benchmarks/fusion_check.py [--device cuda] [--runs 1 2 5 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import kernels  # noqa: E402
from osrbench.models import Classifier32  # noqa: E402
from osrbench.models.classifier32 import DROPOUT_P, LRELU_SLOPE  # noqa: E402

BATCH, K = kernels.BATCH, kernels.K
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


class GroupedClassifier32(nn.Module):
    """``len(nets)`` classifier32 networks (their BN branch 0) as one; (N, B, C, H, W) -> (N, B, K)."""

    def __init__(self, nets: list[Classifier32], dropout: float = DROPOUT_P) -> None:
        super().__init__()
        self.n = n = len(nets)
        self.dropout = dropout
        self.layers = []  # (starts a block: its dropout first, conv name, BN name, stride)
        for first, (_, pairs) in enumerate(Classifier32._BLOCKS):
            for j, (conv, norm) in enumerate(pairs):
                convs = [getattr(net, conv) for net in nets]
                self.register_parameter(conv, nn.Parameter(torch.cat([c.weight.detach() for c in convs])))
                bns = [getattr(net, norm).bns[0] for net in nets]
                bn = nn.BatchNorm2d(n * bns[0].num_features).to(convs[0].weight.device, convs[0].weight.dtype)
                with torch.no_grad():
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, name).copy_(torch.cat([getattr(b, name) for b in bns]))
                setattr(self, norm, bn)
                self.layers.append((j == 0, conv, norm, convs[0].stride))
        self.fc = nn.Parameter(torch.stack([net.fc.weight.detach() for net in nets]))  # (N, K, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])  # run i's channels are block i
        for block_start, conv, norm, stride in self.layers:
            if block_start:
                h = F.dropout2d(h, self.dropout, self.training)
            h = F.leaky_relu(getattr(self, norm)(F.conv2d(h, getattr(self, conv), stride=stride, padding=1,
                                                          groups=n)), LRELU_SLOPE)
        f = h.mean((2, 3)).view(b, n, -1)
        return torch.einsum("bnf,nkf->nbk", f, self.fc)

    def run_part(self, i: int) -> dict[str, torch.Tensor]:
        """Run ``i``'s gradients and running statistics, named as :func:`separate_part` names them."""
        part = {"fc.grad": self.fc.grad[i]}
        for _, conv, norm, _ in self.layers:
            bn = getattr(self, norm)
            for name, t in ((f"{conv}.grad", getattr(self, conv).grad), (f"{norm}.weight.grad", bn.weight.grad),
                            (f"{norm}.bias.grad", bn.bias.grad), (f"{norm}.running_mean", bn.running_mean),
                            (f"{norm}.running_var", bn.running_var)):
                part[name] = t.chunk(self.n)[i]
        return part


def separate_part(net: Classifier32) -> dict[str, torch.Tensor]:
    part = {"fc.grad": net.fc.weight.grad}
    for _, pairs in Classifier32._BLOCKS:
        for conv, norm in pairs:
            bn = getattr(net, norm).bns[0]
            part.update({f"{conv}.grad": getattr(net, conv).weight.grad, f"{norm}.weight.grad": bn.weight.grad,
                         f"{norm}.bias.grad": bn.bias.grad, f"{norm}.running_mean": bn.running_mean,
                         f"{norm}.running_var": bn.running_var})
    return part


def check_equal(device: torch.device, n: int = 3, batch: int = 16, size: int = 32) -> float:
    """The grouped step's gradients and running statistics against ``n`` separate networks (dropout
    off), on ``batch`` images each, in float64 (float32 rounding differs by up to 2% in conv1's
    gradient through BatchNorm's backward at this batch); returns the largest relative difference
    (raises above 1e-10)."""
    torch.manual_seed(0)
    nets = [Classifier32(K).to(device, torch.float64) for _ in range(n)]
    grouped = GroupedClassifier32(nets, dropout=0.0)
    x = torch.randn(n, batch, 3, size, size, device=device, dtype=torch.float64)
    y = torch.randint(0, K, (n, batch), device=device)
    sum(F.cross_entropy(logits, yi) for logits, yi in zip(grouped(x), y)).backward()
    worst = 0.0
    for i, net in enumerate(nets):
        for m in net.modules():
            if isinstance(m, nn.Dropout2d):
                m.p = 0.0
        F.cross_entropy(net(x[i]), y[i]).backward()
        got, ref = grouped.run_part(i), separate_part(net)
        assert got.keys() == ref.keys()
        for name, r in ref.items():
            worst = max(worst, float((got[name] - r).abs().max()) / (float(r.abs().max()) or 1.0))
    if worst > 1e-10:
        raise AssertionError(f"the grouped step differs from the separate ones by {worst:.3g} (relative)")
    return worst


def separate_step(n: int, device: torch.device) -> Callable[[], None]:
    """N networks, N optimisers, N batches: one training step of each, one after the other."""
    nets = [Classifier32(K).to(device).train() for _ in range(n)]
    opts = [torch.optim.SGD(net.parameters(), **SGD, foreach=True) for net in nets]  # CUDA's default
    x = torch.randn(n, BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, K, (n, BATCH), device=device)

    def step() -> None:
        for net, opt, xi, yi in zip(nets, opts, x, y):
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(net(xi), yi).backward()
            opt.step()

    return step


def grouped_step(n: int, device: torch.device) -> Callable[[], None]:
    """The same N runs as one grouped network and one optimiser."""
    net = GroupedClassifier32([Classifier32(K).to(device) for _ in range(n)]).train()
    opt = torch.optim.SGD(net.parameters(), **SGD, foreach=True)
    x = torch.randn(n, BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, K, (n, BATCH), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum").div(BATCH).backward()  # sum of N means
        opt.step()

    return step


def graphed(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step`` recorded once as a CUDA graph (after a warm-up on a side stream), replayed per call."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def rate(step: Callable[[], None], n: int, device: torch.device, warm: int, steps: int) -> float:
    """Aggregate training images per second of ``steps`` calls after ``warm``."""
    for _ in range(warm):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n * BATCH * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 5, 8])
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    worst = check_equal(device)
    cuda = device.type == "cuda"
    rows = []
    for n in args.runs:
        row = [n]
        for make in (separate_step, grouped_step):
            step = make(n, device)
            step()  # momentum buffers exist before counting, as in a later batch of a run
            _, counted = kernels.count(step, device)
            row += [f"{rate(step, n, device, args.warm, args.steps):,.0f}", counted.total]
            if cuda:
                row.append(f"{rate(graphed(step, device), n, device, args.warm, args.steps):,.0f}")
        rows.append(row)
    print(f"horizontal fusion of classifier32 steps ({device}, torch {torch.__version__}, batch {BATCH} per run, "
          f"32 px, fp32, SGD; {args.steps} timed steps after {args.warm}); grouped step = separate steps within "
          f"{worst:.2g} (relative, dropout off)")
    graph_cols = ["graphed img/s"] if cuda else []
    print(tabulate(rows, headers=["runs", "separate img/s", "separate kernels/step", *graph_cols,
                                  "grouped img/s", "grouped kernels/step", *graph_cols], disable_numparse=True))


if __name__ == "__main__":
    main()
