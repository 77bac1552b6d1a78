"""The ceiling of horizontal fusion (HFTA, arXiv 2102.02344) for the networks DIAS and ARPL+CS train
at batch 64, measured before building it into packs (issue 26, step 3).

N training steps as N separate networks against one network of N groups: every convolution (and
transposed convolution) grouped by run (``groups=N``), every BatchNorm over the N runs' channels
(per-channel batch statistics are each run's own), activations over all channels,
heads batched, each loss the sum of the N runs' means. SGD and Adam are elementwise, so one
optimiser over the grouped parameters steps each run as its own optimiser would. Two networks:

- ``classifier32``: forward, cross-entropy, backward, SGD with momentum and weight decay;
- ``dcgan``: the 32-px DCGAN pair's GAN step as DIAS and ARPL+CS run it (G(z); a D step on real
  images and detached fakes; a G step through D), Adam for each.

Each run keeps its own random draws: the grouped classifier draws run i's dropout masks from run
i's generator exactly as ``F.dropout2d`` draws them from the default generator alone (N small
draws per dropout layer, timed too). Before timing, the grouped step's gradients and running
statistics are checked against the N separate ones in float64, dropout masks included. Each way
is timed eager and, on CUDA, replayed from one CUDA graph of the whole step (the N separate steps
in one graph: a pack's best case without overlap). An upper bound for DIAS: no second classifier,
no host logic.
Run: python benchmarks/fusion_check.py [--device cuda] [--nets classifier32 dcgan] [--runs 1 2 5 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import kernels  # noqa: E402
from osrbench.models import Classifier32, make_gan  # noqa: E402
from osrbench.models.classifier32 import DROPOUT_P, LRELU_SLOPE  # noqa: E402

BATCH, K, NZ = kernels.BATCH, kernels.K, 100
# foreach: CUDA's default, and on the CPU the kernels counted as CUDA would dispatch them.
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
ADAM = dict(lr=2e-4, betas=(0.5, 0.999), foreach=True)
Step = Callable[[], None]


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, B, C, H, W) -> (B, N*C, H, W): run i's channels are block i."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def to_runs(h: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N*C, H, W) -> (N, B, C, H, W)."""
    return h.view(h.shape[0], n, -1, *h.shape[2:]).transpose(0, 1)


def grouped_layer(layers: list[nn.Module]) -> nn.Module:
    """N runs' copies of one layer as one layer over their channel blocks. Conv2d weights are
    (out, in/groups, k, k) and ConvTranspose2d's (in, out/groups, k, k): both stack along dim 0."""
    first, n = layers[0], len(layers)
    if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)):
        grouped = type(first)(first.in_channels * n, first.out_channels * n, first.kernel_size, first.stride,
                              first.padding, groups=first.groups * n, bias=False)
        names = ("weight",)
    elif isinstance(first, nn.BatchNorm2d):
        grouped = nn.BatchNorm2d(first.num_features * n, first.eps, first.momentum)
        names = ("weight", "bias", "running_mean", "running_var")
    else:  # an activation: no state
        return first
    grouped = grouped.to(first.weight.device, first.weight.dtype)
    with torch.no_grad():
        for name in names:
            getattr(grouped, name).copy_(torch.cat([getattr(layer, name) for layer in layers]))
    return grouped


def layer_parts(layers: Iterable[nn.Module], n: int | None = None, i: int = 0) -> list[torch.Tensor]:
    """The gradients and running statistics of ``layers`` in order; of grouped layers (``n`` runs),
    run ``i``'s part of each."""
    parts = []
    for layer in layers:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                t = t.grad if isinstance(t, nn.Parameter) else t
                parts.append(t if n is None else t.chunk(n)[i])
    return parts


def relative_difference(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    assert len(got) == len(ref)
    return max(float((a - b).abs().max()) / (float(b.abs().max()) or 1.0) for a, b in zip(got, ref))


def classifier32_layers(net: Classifier32) -> list[list[nn.Module]]:
    """Per block of ``net``: its convolutions and their BatchNorms (branch 0), in order."""
    return [[m for conv, norm in pairs for m in (getattr(net, conv), getattr(net, norm).bns[0])]
            for _, pairs in Classifier32._BLOCKS]


class GroupedClassifier32(nn.Module):
    """``len(nets)`` classifier32 networks (their BN branch 0) as one; (N, B, C, H, W) -> (N, B, K)."""

    def __init__(self, nets: list[Classifier32], generators: list[torch.Generator]) -> None:
        super().__init__()
        self.n = len(nets)
        self.generators = generators  # run i's dropout masks: drawn as its F.dropout2d draws them alone
        self.blocks = nn.ModuleList(nn.ModuleList(map(grouped_layer, zip(*blocks)))
                                    for blocks in zip(*map(classifier32_layers, nets)))
        self.fc = nn.Parameter(torch.stack([net.fc.weight.detach() for net in nets]))  # (N, K, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_channels(x)
        for block in self.blocks:  # its Dropout2d, then conv -> BN -> LeakyReLU three times
            h = self.dropout2d(h)
            for conv, bn in zip(block[::2], block[1::2]):
                h = F.leaky_relu(bn(conv(h)), LRELU_SLOPE)
        f = h.mean((2, 3)).view(h.shape[0], self.n, -1)
        return torch.einsum("bnf,nkf->nbk", f, self.fc)

    def dropout2d(self, h: torch.Tensor) -> torch.Tensor:
        """``F.dropout2d`` with each run's masks from its own generator, as ATen's feature dropout
        makes them (a (B, C, 1, 1) Bernoulli draw, divided by 1 - p): the same masks as alone."""
        if not self.training:
            return h
        b, c = h.shape[0], h.shape[1] // self.n
        keep = 1 - DROPOUT_P
        noise = torch.cat([h.new_empty(b, c, 1, 1).bernoulli_(keep, generator=g) for g in self.generators], 1)
        return h * noise.div_(keep)

    def run_part(self, i: int) -> list[torch.Tensor]:
        """Run ``i``'s gradients and running statistics, in :func:`separate_part`'s order."""
        return [*layer_parts([m for block in self.blocks for m in block], self.n, i), self.fc.grad[i]]


def separate_part(net: Classifier32) -> list[torch.Tensor]:
    return [*layer_parts([m for block in classifier32_layers(net) for m in block]), net.fc.weight.grad]


def run_generators(n: int, device: torch.device) -> list[torch.Generator]:
    """Run i's dropout generator: the state its device's default generator has alone (seed 100 + i)."""
    return [torch.Generator(device).manual_seed(100 + i) for i in range(n)]


def check_classifier32(device: torch.device, n: int = 3, batch: int = 16, size: int = 32) -> float:
    """The grouped step's gradients and running statistics against ``n`` separate networks, each
    run with its own dropout masks, on ``batch`` images each, in float64 (float32 rounding differs
    by up to 2% in conv1's gradient through BatchNorm's backward at this batch): the largest
    relative difference."""
    torch.manual_seed(0)
    nets = [Classifier32(K).to(device, torch.float64) for _ in range(n)]
    grouped = GroupedClassifier32(nets, run_generators(n, device))
    x = torch.randn(n, batch, 3, size, size, device=device, dtype=torch.float64)
    y = torch.randint(0, K, (n, batch), device=device)
    sum(F.cross_entropy(logits, yi) for logits, yi in zip(grouped(x), y)).backward()
    worst = 0.0
    for i, net in enumerate(nets):
        torch.manual_seed(100 + i)  # alone, the masks come from the device's default generator
        F.cross_entropy(net(x[i]), y[i]).backward()
        worst = max(worst, relative_difference(grouped.run_part(i), separate_part(net)))
    return worst


def separate_classifier32(n: int, device: torch.device) -> Step:
    """N networks, N optimisers, N batches: one training step of each, one after the other."""
    nets = [Classifier32(K).to(device).train() for _ in range(n)]
    opts = [torch.optim.SGD(net.parameters(), **SGD) for net in nets]
    x = torch.randn(n, BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, K, (n, BATCH), device=device)

    def step() -> None:
        for net, opt, xi, yi in zip(nets, opts, x, y):
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(net(xi), yi).backward()
            opt.step()

    return step


def grouped_classifier32(n: int, device: torch.device) -> Step:
    """The same N runs as one grouped network and one optimiser."""
    generators = run_generators(n, device)
    net = GroupedClassifier32([Classifier32(K).to(device) for _ in range(n)], generators).train()
    opt = torch.optim.SGD(net.parameters(), **SGD)
    x = torch.randn(n, BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, K, (n, BATCH), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum").div(BATCH).backward()  # sum of N means
        opt.step()

    step.generators = generators  # a CUDA graph of the step registers them
    return step


class GroupedGAN(nn.Module):
    """N runs' 32-px DCGAN pairs as one: ``generate`` (N, B, nz, 1, 1) -> (N, B, C, 32, 32) and
    ``discriminate`` (N, B, C, H, W) -> (N, B) probabilities."""

    def __init__(self, gans: list[tuple[nn.Module, nn.Module]]) -> None:
        super().__init__()
        self.n = len(gans)
        self.g = nn.Sequential(*map(grouped_layer, zip(*[list(g.main) for g, _ in gans])))
        self.d = nn.Sequential(*map(grouped_layer, zip(*[list(d.main) for _, d in gans])))
        heads = [d.classifier[0] for _, d in gans]  # Linear(c, 1), then a sigmoid
        self.d_weight = nn.Parameter(torch.stack([h.weight.detach() for h in heads]))  # (N, 1, c)
        self.d_bias = nn.Parameter(torch.stack([h.bias.detach() for h in heads]))  # (N, 1)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return to_runs(self.g(to_channels(z)), self.n)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        h = self.d(to_channels(x)).mean((2, 3)).view(x.shape[1], self.n, -1)
        return torch.sigmoid(torch.einsum("bnc,noc->nbo", h, self.d_weight) + self.d_bias[:, None]).squeeze(-1)

    def d_parameters(self) -> list[nn.Parameter]:
        return [*self.d.parameters(), self.d_weight, self.d_bias]

    def d_parts(self, i: int) -> list[torch.Tensor]:
        return [*layer_parts(self.d, self.n, i), self.d_weight.grad[i], self.d_bias.grad[i]]


def discriminator_parts(d: nn.Module) -> list[torch.Tensor]:
    """A separate D's parts, in :meth:`GroupedGAN.d_parts`' order."""
    return [*layer_parts(d.main), d.classifier[0].weight.grad, d.classifier[0].bias.grad]


def bce_sum_of_means(p: torch.Tensor, target: float) -> torch.Tensor:
    """The N runs' BCE means of (N, B) probabilities against ``target``, summed."""
    return F.binary_cross_entropy(p, torch.full_like(p, target), reduction="sum") / p.shape[1]


def make_gans(n: int, device: torch.device, dtype: torch.dtype = torch.float32):
    return [tuple(m.to(device, dtype).train() for m in make_gan(32, 3, "reference", nz=NZ)[:2]) for _ in range(n)]


def check_dcgan(device: torch.device, n: int = 3, batch: int = 16) -> float:
    """The grouped D and G gradients (a D step's loss, then a G step's) and running statistics
    against ``n`` separate pairs, in float64: the largest relative difference."""
    torch.manual_seed(0)
    gans = make_gans(n, device, torch.float64)
    grouped = GroupedGAN(gans)
    x = torch.rand(n, batch, 3, 32, 32, device=device, dtype=torch.float64)
    z = torch.randn(n, batch, NZ, 1, 1, device=device, dtype=torch.float64)
    fake = grouped.generate(z)
    (bce_sum_of_means(grouped.discriminate(x), 1.0) + bce_sum_of_means(grouped.discriminate(fake.detach()), 0.0)).backward()
    after_d_step = [[t.clone() for t in grouped.d_parts(i)] for i in range(n)]
    bce_sum_of_means(grouped.discriminate(fake), 1.0).backward()  # G's gradients; D's accumulate
    ones, zeros = (torch.full((batch,), v, device=device, dtype=torch.float64) for v in (1.0, 0.0))
    worst = 0.0
    for i, (g, d) in enumerate(gans):
        fake_i = g(z[i])
        (F.binary_cross_entropy(d(x[i]), ones) + F.binary_cross_entropy(d(fake_i.detach()), zeros)).backward()
        worst = max(worst, relative_difference(after_d_step[i], discriminator_parts(d)))
        F.binary_cross_entropy(d(fake_i), ones).backward()
        worst = max(worst, relative_difference(grouped.d_parts(i), discriminator_parts(d)),
                    relative_difference(layer_parts(grouped.g, n, i), layer_parts(g.main)))
    return worst


def adam(params: Iterable[nn.Parameter], device: torch.device) -> torch.optim.Adam:
    """Adam as the GANs step; capturable on CUDA (its step count on the device), as graphs need."""
    return torch.optim.Adam(params, **ADAM, capturable=device.type == "cuda")


def _gan_data(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, BATCH, 3, 32, 32, device=device), torch.randn(n, BATCH, NZ, 1, 1, device=device)


def separate_dcgan(n: int, device: torch.device) -> Step:
    """N DCGAN pairs, their Adams, N batches: one GAN step of each, one after the other."""
    gans = make_gans(n, device)
    opts = [(adam(d.parameters(), device), adam(g.parameters(), device)) for g, d in gans]
    x, z = _gan_data(n, device)
    ones, zeros = torch.ones(BATCH, device=device), torch.zeros(BATCH, device=device)

    def step() -> None:
        for (g, d), (opt_d, opt_g), xi, zi in zip(gans, opts, x, z):
            fake = g(zi)
            opt_d.zero_grad(set_to_none=False)
            (F.binary_cross_entropy(d(xi), ones) + F.binary_cross_entropy(d(fake.detach()), zeros)).backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=False)
            F.binary_cross_entropy(d(fake), ones).backward()
            opt_g.step()

    return step


def grouped_dcgan(n: int, device: torch.device) -> Step:
    """The same N GAN steps as one grouped pair and two Adams."""
    gan = GroupedGAN(make_gans(n, device)).train()
    opt_d, opt_g = adam(gan.d_parameters(), device), adam(gan.g.parameters(), device)
    x, z = _gan_data(n, device)

    def step() -> None:
        fake = gan.generate(z)
        opt_d.zero_grad(set_to_none=False)
        (bce_sum_of_means(gan.discriminate(x), 1.0) + bce_sum_of_means(gan.discriminate(fake.detach()), 0.0)).backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=False)
        bce_sum_of_means(gan.discriminate(fake), 1.0).backward()
        opt_g.step()

    return step


#: Per network: the float64 check, then the N separate steps and the grouped step.
NETS = {"classifier32": (check_classifier32, separate_classifier32, grouped_classifier32),
        "dcgan": (check_dcgan, separate_dcgan, grouped_dcgan)}


def graphed(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step`` recorded once as a CUDA graph (after a warm-up on a side stream), replayed per call."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for g in getattr(step, "generators", ()):
        graph.register_generator_state(g)
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
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 5, 8])
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    rows, checks = [], []
    for net in args.nets:
        check, *makers = NETS[net]
        worst = check(device)
        checks.append(f"{net} {worst:.2g}")
        if worst > 1e-10:
            raise SystemExit(f"the grouped {net} step differs from the separate ones by {worst:.3g} (relative)")
        for n in args.runs:
            row = [net, n]
            for make in makers:
                step = make(n, device)
                step()  # optimiser state exists before counting, as in a later batch of a run
                _, counted = kernels.count(step, device)
                row += [f"{rate(step, n, device, args.warm, args.steps):,.0f}", counted.total]
                if cuda:
                    row.append(f"{rate(graphed(step, device), n, device, args.warm, args.steps):,.0f}")
            rows.append(row)
    print(f"horizontal fusion ({device}, torch {torch.__version__}, batch {BATCH} per run, 32 px, fp32; "
          f"{args.steps} timed steps after {args.warm}); grouped step = separate steps in float64 within "
          f"{', '.join(checks)} (relative; each run's own dropout masks)")
    graph_cols = ["graphed img/s"] if cuda else []
    print(tabulate(rows, headers=["network", "runs", "separate img/s", "separate kernels/step", *graph_cols,
                                  "grouped img/s", "grouped kernels/step", *graph_cols], disable_numparse=True))

if __name__ == "__main__":
    main()
