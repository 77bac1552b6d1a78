"""The MEDAF release's networks (``core/net.py``), module for module.

Construction order and attribute names are the release's, so the state-dict keys match its
checkpoints (``shared_l3.0.0.weight``, ``branch1_l4.0.0.residual_function.0.weight``, ...,
``gate_cls.1.fc.bias``) and the default initial draws come in its order.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)


class BasicBlock(nn.Module):
    """net 11-34: conv3x3-BN-LeakyReLU(0.01)-conv3x3-BN plus a 1x1 shortcut when the shape changes, ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual_function(x) + self.shortcut(x))


class ResNet(nn.Module):
    """net 37-87 with build_backbone('resnet18') (net 89-92): strides 1, 1, 2, 2, 2 (total 8)."""

    def __init__(self, num_block=(2, 2, 2, 2), resprestride=1, res1ststride=1, res2ndstride=2, inchan=3):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(inchan, 64, kernel_size=3, padding=1, bias=False, stride=resprestride),
                                   nn.BatchNorm2d(64), nn.LeakyReLU())
        self.in_channels = 64
        self.conv2_x = self._make_layer(64, num_block[0], res1ststride)
        self.conv3_x = self._make_layer(128, num_block[1], res2ndstride)
        self.conv4_x = self._make_layer(256, num_block[2], 2)
        self.conv5_x = self._make_layer(512, num_block[3], 2)
        self.conv6_x = nn.Identity()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.output_dim = 512

    def _make_layer(self, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_channels, out_channels, s))
            self.in_channels = out_channels
        return nn.Sequential(*layers)


class Classifier(nn.Module):
    """net 133-142: a Linear (the gate head's two layers)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.fc(x)
        return logit.unsqueeze(0) if logit.dim() == 1 else logit


class MultiBranchNet(nn.Module):
    """net 145-235: a shared stem, three experts (copies of one ResNet trunk) with 1x1 CAM heads, and a
    gating network (another copy) whose softmax(/gate_temp) weighs the experts' detached logits."""

    def __init__(self, num_known: int, gate_temp: float, inchan: int = 3):
        super().__init__()
        backbone = ResNet(inchan=inchan)
        feature_dim = backbone.output_dim
        self.gate_temp = gate_temp
        self.num_known = num_known
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        children = list(backbone.children())  # conv1, conv2_x, conv3_x, conv4_x, conv5_x, conv6_x, avg_pool
        self.shared_l3 = nn.Sequential(*children[:-6])
        self.branch1_l4 = nn.Sequential(*children[-6:-3])
        self.branch1_l5 = nn.Sequential(*children[-3])
        self.branch1_cls = conv1x1(feature_dim, num_known)
        self.branch2_l4 = copy.deepcopy(self.branch1_l4)
        self.branch2_l5 = copy.deepcopy(self.branch1_l5)
        self.branch2_cls = conv1x1(feature_dim, num_known)
        self.branch3_l4 = copy.deepcopy(self.branch1_l4)
        self.branch3_l5 = copy.deepcopy(self.branch1_l5)
        self.branch3_cls = conv1x1(feature_dim, num_known)
        self.gate_l3 = copy.deepcopy(self.shared_l3)
        self.gate_l4 = copy.deepcopy(self.branch1_l4)
        self.gate_l5 = copy.deepcopy(self.branch1_l5)
        self.gate_cls = nn.Sequential(Classifier(feature_dim, int(feature_dim / 4), bias=True),
                                      Classifier(int(feature_dim / 4), 3, bias=True))

    def branches(self):
        return [(self.branch1_l4, self.branch1_l5, self.branch1_cls), (self.branch2_l4, self.branch2_l5, self.branch2_cls),
                (self.branch3_l4, self.branch3_l5, self.branch3_cls)]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, pooled: bool = False) -> dict[str, object]:
        """``logits``: [expert 1, 2, 3, fused]; ``gate_pred`` (B, 3); with labels ``cams`` (B, 3, h, w):
        each expert's CAM of the true class (net 176-220); with ``pooled`` the experts' pooled
        512-d features side by side (B, 1536), what their 1x1 heads read."""
        b = x.size(0)
        shared = self.shared_l3(x)
        cams, logits, feats = [], [], []
        for l4, l5, cls in self.branches():
            fmap = l5(l4(shared))
            if pooled:
                feats.append(self.avg_pool(fmap).view(b, -1))
            ft_cams = cls(fmap)
            cams.append(ft_cams)
            logits.append(self.avg_pool(ft_cams).view(b, -1))
        gate_pool = self.avg_pool(self.gate_l5(self.gate_l4(self.gate_l3(x)))).view(b, -1)
        gate_pred = F.softmax(self.gate_cls(gate_pool) / self.gate_temp, dim=1)
        fused = (torch.stack([z.detach() for z in logits], dim=-1) * gate_pred.view(b, 1, -1)).sum(-1)
        out: dict[str, object] = {"logits": [*logits, fused], "gate_pred": gate_pred}
        if pooled:
            out["pooled"] = torch.cat(feats, dim=1)
        if y is not None:
            index = y[:, None, None, None].repeat(1, 1, cams[0].shape[-2], cams[0].shape[-1])
            out["cams"] = torch.cat([c.gather(dim=1, index=index) for c in cams], dim=1)
        return out

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(classifier, extractor) parameters as ``get_params`` splits them (net 223-235)."""
        extractor = [p for m in (self.shared_l3, self.branch1_l4, self.branch1_l5, self.branch2_l4, self.branch2_l5,
                                 self.branch3_l4, self.branch3_l5, self.gate_l3, self.gate_l4, self.gate_l5)
                     for p in m.parameters()]
        ids = {id(p) for p in extractor}
        return [p for p in self.parameters() if id(p) not in ids], extractor


def attn_div(cams: torch.Tensor) -> torch.Tensor:
    """train 8-21, op for op: the cosine is over dim 1 of (bs, 1, hw) views, i.e. per position, and
    the pair sum is divided by i*(i-1)/2 with the loop's last i (1 for three experts)."""
    cos = nn.CosineSimilarity(dim=1, eps=1e-6)
    bs, num_part = cams.shape[0], cams.shape[1]
    cams = F.normalize(cams.reshape(bs, num_part, -1), p=2, dim=-1)
    mean = cams.mean(dim=-1).view(bs, num_part, -1).expand(size=[bs, num_part, cams.shape[-1]])
    cams = F.relu(cams - mean)
    loss = cams.new_zeros(())
    for i in range(num_part):
        for j in range(i + 1, num_part):
            loss = loss + cos(cams[:, i, :].reshape(bs, 1, -1), cams[:, j, :].reshape(bs, 1, -1)).mean()
    last = num_part - 1
    return loss / (last * (last - 1) / 2)
