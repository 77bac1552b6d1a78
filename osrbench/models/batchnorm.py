"""Batch normalisation whose batch count costs one kernel per network forward, not one per layer.

``BatchNorm2d`` adds 1 to its ``num_batches_tracked`` in every train-mode forward: one kernel per
layer (9 of a classifier32 forward's ~30). With a fixed momentum the count is bookkeeping only
(torch reads it only when ``momentum=None``), so the networks here use
:class:`UncountedBatchNorm2d` and count every BN a forward ran with :func:`count_batches`, in one
foreach kernel. The counts, the running statistics and the outputs are BatchNorm2d's.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UncountedBatchNorm2d", "count_batches"]


class UncountedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that leaves ``num_batches_tracked`` to its network (:func:`count_batches`).

    Otherwise the same ``F.batch_norm`` call as ``BatchNorm2d.forward`` with a fixed momentum.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


def count_batches(norms: Iterable[nn.BatchNorm2d]) -> None:
    """``num_batches_tracked += 1`` on each of ``norms`` in train mode, in one foreach kernel (a BN
    that counts itself, a plain ``BatchNorm2d`` put in by a user, is left to do so)."""
    counts = [n.num_batches_tracked for n in norms
              if isinstance(n, UncountedBatchNorm2d) and n.training and n.num_batches_tracked is not None]
    if counts:
        torch._foreach_add_(counts, 1)
