"""Images per second of one training epoch per method: osrbench's device-resident stream (eager,
and on CUDA replayed from CUDA graphs) vs a PIL DataLoader like the releases' (same method, same
osrbench step, same batch size), measured side by side: osrbench against itself under the two
feeds, not against the releases' own code.

Each feed runs ``ROUNDS`` epochs (OSRBENCH_BENCH_ROUNDS; default 3 on CUDA, 1 on the CPU) and
reports the median. Run: ``make bench`` (CPU) or ``benchmarks/gpu_check.sh`` (CUDA). The data are
synthetic uint8 CIFAR-shaped images: throughput does not depend on pixel values.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from benchmarks import kernels
from benchmarks.conftest import DEVICE, IMAGES, METHODS, PRECISION, ROUNDS, THROUGHPUT, WORKERS
from osrbench import graphs
from osrbench.data.stream import TrainStream

BATCH = kernels.BATCH


class PILDataset(torch.utils.data.Dataset):
    """What the releases do: PIL images through torchvision's reference train transforms."""

    def __init__(self, x, y):
        import torchvision.transforms as T

        self.x = x.permute(0, 2, 3, 1).numpy()
        self.y = y
        self.t = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        from PIL import Image

        return self.t(Image.fromarray(self.x[i])), self.y[i]


def _epoch(s, batches_per_phase):
    """One epoch as the engine runs it (osrbench.session), fed by ``batches_per_phase``; its last losses."""
    last = {}
    s.run_epoch(0, lambda phase, i, losses: last.update(losses), batches=batches_per_phase)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return last


def _measure(benchmark, method_name, feed):
    x, y = kernels.synthetic_images(IMAGES)
    s = kernels.bench_session(method_name, x, y, DEVICE, {"precision": PRECISION,
                                                         "cuda_graphs": feed in ("graphs", "compiled graphs"),
                                                         "compile": feed == "compiled graphs"})
    if feed != "pil":
        batches = lambda phase: s.stream.batches(0, phase)  # noqa: E731
    else:
        loader = torch.utils.data.DataLoader(PILDataset(x, y), batch_size=BATCH, shuffle=True,
                                             num_workers=WORKERS, pin_memory=DEVICE.type == "cuda",
                                             persistent_workers=WORKERS > 0)
        batches = lambda phase: ((a.to(DEVICE, non_blocking=True), b.to(DEVICE, non_blocking=True))  # noqa: E731
                                 for a, b in loader)
    # Warm-up: a few steps (cudnn autotuning, allocator, compiling, recording the graphs) are not
    # part of an epoch's steady cost.
    warm = TrainStream(x[: BATCH * 5], y[: BATCH * 5], BATCH, seed=1, device=DEVICE)
    _epoch(s, lambda phase: warm.batches(0, phase))
    seconds = []

    def timed_epoch():
        t0 = time.perf_counter()
        out = _epoch(s, batches)
        seconds.append(time.perf_counter() - t0)
        return out

    losses = benchmark.pedantic(timed_epoch, rounds=ROUNDS, iterations=1)
    assert all(np.isfinite(float(v)) for v in losses.values())
    rate = IMAGES / statistics.median(seconds)
    THROUGHPUT.setdefault(method_name, {})[feed] = rate
    benchmark.extra_info.update(images=IMAGES, images_per_s=rate, rounds=ROUNDS, seconds=seconds, device=str(DEVICE),
                                precision=PRECISION, workers=WORKERS, feed=feed)
    if isinstance(s.step, graphs.StepGraphs):  # eager (warm-up, partial batches), captured, replayed
        THROUGHPUT[method_name]["graph steps"] = dict(s.step.counts)
        benchmark.extra_info["graph_steps"] = dict(s.step.counts)
    if DEVICE.type == "cuda":
        benchmark.extra_info["peak_memory_mb"] = torch.cuda.max_memory_allocated(DEVICE) / 2**20


@pytest.mark.parametrize("method_name", METHODS)
def test_epoch_device_stream(benchmark, method_name):
    _measure(benchmark, method_name, "stream")


@pytest.mark.parametrize("method_name", METHODS)
def test_epoch_pil_dataloader(benchmark, method_name):
    _measure(benchmark, method_name, "pil")


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("method_name", METHODS)
def test_epoch_device_stream_cuda_graphs(benchmark, method_name):
    _measure(benchmark, method_name, "graphs")


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("method_name", METHODS)
def test_epoch_device_stream_compiled_cuda_graphs(benchmark, method_name):
    """compile=true inside the graphs (gpu_check.sh's compile step): is it faster than graphs alone?"""
    _measure(benchmark, method_name, "compiled graphs")
