"""GCPL and RPL (METHODS.md §5.3), the ARPL release's other two losses (``iCGY96/ARPL`` HEAD 3ede8b3,
``loss/GCPLoss.py``, ``loss/RPLoss.py``, ``loss/Dist.py``), trained by the same ``train`` loop.

Everything but the loss is :class:`~osrbench_arpl.arpl.ARPL`'s: ``classifier32`` (single BN), one
optimiser over the backbone **and** the loss's parameters (so SGD weight decay acts on them), the
ARPL recipes and schedule, one plain pass per epoch, the unused Linear head.

- Centres c (K·M of them, M = ``num_centers``), drawn after the network as the release's ``Dist``
  does: ``0.1 * torch.randn(K * M, D)`` from the global RNG (:class:`ReciprocalPoints`, whose
  ``points`` hold them). d(f, c) = ‖f − c‖²/D in the release's expanded form; with M > 1 the K·M
  distances are reshaped to (K, M), class-major, and averaged over M (:func:`class_distances`).
- ``gcpl``: logits −d; loss CE(−d/τ, y) + λ·MSE(f, c_y)/2 (mean over batch and D).
- ``rpl``: logits +d; one scalar radius R (shape (1,), 0) in the optimiser;
  loss CE(d/τ, y) + λ·mean_i (m_i − R)², m_i = mean_j (f_ij − c_{y_i, j})².
- Test: eval mode; score = max softmax of the logits (MSP, float64 unless ``score_dtype`` says
  float32, as the release); prediction argmax; the MLS of the same logits is stored too.

Release quirks kept: both losses take the own centre as ``centers[labels]``, row y of the (K·M)×D
table. With M = 1 that is class y's centre; with M > 1 it is centre y mod M of class y // M (the
distances use rows yM .. yM + M − 1). And ``GCPLoss`` never passes ``--num-centers`` to ``Dist``, so
the release's GCPL always has M = 1; ``gcpl`` with ``num_centers`` > 1 is an osrbench adaptation
(recorded in the result) that applies RPLoss's use of M to GCPLoss.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from osrbench import layouts
from osrbench.method import Context, MethodSpec, Option
from osrbench.models.backbones import BACKBONE_DEFAULTS
from osrbench.training import OPTIM_DEFAULTS, mls_smoothed_cross_entropy

from osrbench_arpl.arpl import ARPL, CLASSIC_RECIPES, DEFAULTS, OPTIONS, ReciprocalPoints, distance_logits

GCPL_CITATION = (
    'Yang, Zhang, Yin, Liu, "Robust Classification with Convolutional Prototype Learning", CVPR 2018; '
    "code: the ARPL release (Chen et al., TPAMI 2021)"
)
RPL_CITATION = (
    'Chen, Qiao, Shi, Peng, Li, Huang, Pu, Tian, "Learning Open Set Network with Discriminative Reciprocal '
    'Points", ECCV 2020; code: the ARPL release (Chen et al., TPAMI 2021)'
)

#: GCPL's and RPL's keys: ARPL's without the margin, plus the release's --num-centers.
CENTRE_DEFAULTS: dict[str, Any] = {
    **{key: DEFAULTS[key] for key in (*OPTIM_DEFAULTS, "temp", "weight_pl", "label_smoothing", *BACKBONE_DEFAULTS)},
    "num_centers": 1,  # M, centres per class (release --num-centers; GCPLoss ignores it there)
}

CENTRE_OPTIONS: dict[str, Option] = {
    **{key: OPTIONS[key] for key in (*OPTIM_DEFAULTS, "temp", "label_smoothing", *BACKBONE_DEFAULTS)},
    "weight_pl": Option(minimum=0, help="lambda, weight of the centre term (GCPL: MSE to the own centre; "
                                        "RPL: distance to the radius)"),
    "num_centers": Option(minimum=1, help="M, centres per class, distances averaged over them (the release's "
                                          "GCPL ignores it: M > 1 is an adaptation there)"),
}


# ------------------------------------------------------------------------------------ losses


def class_distances(features: torch.Tensor, centres: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The release's ``Dist``: d(f, c) = ‖f − c‖²/D for each of the K·M centres, reshaped (B, K, M)
    (class-major: class k owns rows kM .. kM + M − 1) and averaged over M; (B, K)."""
    d = distance_logits(features, centres)
    m = centres.shape[0] // num_classes
    return d if m == 1 else d.reshape(-1, num_classes, m).mean(2)


def own_centres(centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``centers[labels]`` as both losses index it: row y of the K·M table (class y's centre when M = 1)."""
    return centres[labels]


def gcpl_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    centres: torch.Tensor,
    num_classes: int,
    temp: float = 1.0,
    weight_pl: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, loss)`` of GCPL: logits −d; CE(−d/τ, y) + λ·MSE(f, c_y)/2, the MSE a mean over batch and D."""
    logits = -class_distances(features, centres, num_classes)
    ce = mls_smoothed_cross_entropy(logits / temp, labels, label_smoothing)
    pull = (features - own_centres(centres, labels)).pow(2).mean() / 2
    return logits, ce + weight_pl * pull


def rpl_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    centres: torch.Tensor,
    radius: torch.Tensor,
    num_classes: int,
    temp: float = 1.0,
    weight_pl: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, loss)`` of RPL: logits +d; CE(d/τ, y) + λ·mean_i (m_i − R)², m_i = mean_j (f_ij − c_{y_i, j})²
    (the release's ``mse_loss`` of the (B,) vector against the (1,) radius, broadcast)."""
    logits = class_distances(features, centres, num_classes)
    ce = mls_smoothed_cross_entropy(logits / temp, labels, label_smoothing)
    own = (features - own_centres(centres, labels)).pow(2).mean(1)
    reg = (own - radius).pow(2).mean()
    return logits, ce + weight_pl * reg


# ------------------------------------------------------------------------------------ methods


class _CentreMethod(ARPL):
    """ARPL's network, optimiser, schedule, step and checkpoints with a Dist-centre loss; MSP score."""

    score_name = "msp"
    method_name = ""
    #: The release's criterion class and the keys its ``state_dict()`` file holds.
    release_loss = ""
    release_keys: tuple[str, ...] = ()
    has_radius = False

    def _build_criterion(self, ctx: Context) -> nn.Module:
        m = self.cfg["num_centers"]
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"num_centers must be an integer >= 1, got {m!r}")
        self.num_centers = m
        return ReciprocalPoints(ctx.num_classes, self.net.feat_dim, num_centers=m, radius=self.has_radius)

    # -------------------------------------------------------------------- external weights
    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The ARPL release's ``classifier32`` and its ``GCPLoss`` / ``RPLoss`` criterion file
        (``Dist.centers``, and RPL's ``radius``), which become :attr:`rp` (``points``, ``radius``)."""
        if self.backbone != "classifier32":
            raise layouts.LayoutError(f"--layout {layout} holds a classifier32 network; this run's backbone is "
                                      f"{self.backbone} (drop --set backbone)")
        net, crit = release_files(weights, self.method_name, self.release_loss, self.release_keys)
        centres = layouts.CRITERION_ALIAS
        expected = {centres: self.rp.points, **({"radius": self.rp.radius} if self.has_radius else {})}
        what = f"the ARPL release criterion ({self.release_loss})"
        rows = crit[centres].shape[0] if centres in crit and crit[centres].dim() == 2 else None
        if rows is not None and rows != self.rp.points.shape[0] and rows % self.num_classes == 0:
            per_class = rows // self.num_classes
            what += f" (its {rows} centres are {per_class} per class: --set num_centers={per_class})"
        layouts.check_strict(crit, expected, what)
        layouts.load_module(self.net, net, "the ARPL release network (classifier32)")
        host = {"points": crit[centres], **({"radius": crit["radius"]} if self.has_radius else {})}
        layouts.load_module(self.rp, host, what)


class GCPL(_CentreMethod):
    """GCPL (``loss/GCPLoss.py``): prototypes, logits −d, CE + λ·MSE(f, c_y)/2."""

    phases: tuple[str, ...] = ("gcpl",)
    plain_phase = method_name = "gcpl"
    # The release scores MSP; mls is stored beside it for rescoring. Dim inputs map near the
    # prototypes, so max(-d) ranks the toy's dim-noise unknowns above its knowns.
    sign_check_exempt = {"mls": "max(-distance to the prototypes) ranks the toy's dim-noise unknowns, whose "
                                "features sit near the prototypes, as known; the release's score is msp"}
    release_loss = "GCPLoss"
    release_keys = ("Dist.centers",)

    def criterion_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _, loss = gcpl_loss(features, labels, self.rp.points, self.num_classes, self.cfg["temp"],
                            self.cfg["weight_pl"], self.cfg["label_smoothing"])
        return loss

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        # Distances to the centres, not affine in f (ViM does not apply).
        return -class_distances(penultimate, self.rp.points, self.num_classes)

    def adaptations(self) -> dict[str, Any]:
        out = super().adaptations()  # the backbone's
        if self.num_centers == 1:
            return out
        return {**out, "num_centers": (
            f"{self.num_centers} centres per class: the release's GCPLoss never passes --num-centers to Dist (its "
            "GCPL always has one); distances averaged over them and the MSE term on centers[labels] as RPLoss does"
        )}


class RPL(_CentreMethod):
    """RPL (``loss/RPLoss.py``): reciprocal points, logits +d, CE + λ·mean (m_i − R)² with one radius R."""

    phases: tuple[str, ...] = ("rpl",)
    plain_phase = method_name = "rpl"
    release_loss = "RPLoss"
    release_keys = ("radius", "Dist.centers")
    has_radius = True

    def criterion_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _, loss = rpl_loss(features, labels, self.rp.points, self.rp.radius, self.num_classes, self.cfg["temp"],
                           self.cfg["weight_pl"], self.cfg["label_smoothing"])
        return loss

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return class_distances(penultimate, self.rp.points, self.num_classes)


# ------------------------------------------------------------------------------------ release files


def release_files(weights: Mapping[str, torch.Tensor], method: str, loss: str,
                  keys: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(network, criterion)`` of the ARPL release's files for ``--loss GCPLoss`` / ``RPLoss``.

    The network in the host's ``Classifier32`` names (:func:`osrbench.layouts.classifier32_state`);
    the criterion under the release's names (``Dist.centers``, ``radius``; a ``module.`` prefix is
    stripped). An ``ARPLoss`` file (``points``) or a network without criterion is refused.
    """
    found: dict[str, str] = {}
    for key in weights:
        short = key[len(layouts.DATA_PARALLEL):] if key.startswith(layouts.DATA_PARALLEL) else key
        if short in (*layouts.CRITERION_KEYS, layouts.CRITERION_ALIAS):
            if short in found:
                raise layouts.LayoutError(f"the files hold the criterion key {short} twice ({found[short]}, {key})")
            found[short] = key
    if "points" in found:
        raise layouts.LayoutError(f"the files hold an ARPLoss criterion (points, radius), not a {loss} one "
                                  f"({', '.join(keys)}): use --method arpl")
    net_keys = [k for k in weights if k not in found.values()]
    if not net_keys:
        raise layouts.LayoutError("the ARPL release files hold no network (a classifier32 state dict, keys like "
                                  "module.conv1.weight); pass the release's <name>_.pth as well as its criterion")
    if any(k.startswith(layouts.DIAS_NETWORKS["net"] + ".") for k in net_keys):
        raise layouts.LayoutError("the files are a DIAS release checkpoint (net2_state_dict, ...), not ARPL release "
                                  "files: use --layout dias-release")
    if not found:
        raise layouts.LayoutError(f"{method} needs the ARPL release's criterion as well as its network: add "
                                  f"--weights <name>__criterion.pth ({loss}: {', '.join(keys)})")
    net = layouts.classifier32_state(weights, exclude=found.values())
    return net, {short: weights[key] for short, key in found.items()}


# ------------------------------------------------------------------------------------ registration

SPECS = (
    MethodSpec(
        name="gcpl",
        factory=GCPL,
        defaults=CENTRE_DEFAULTS,
        recipes=CLASSIC_RECIPES,
        default_recipe="arpl-release",
        description="GCPL: prototypes on classifier32, logits -distance, CE + centre MSE; score MSP",
        citation=GCPL_CITATION,
        options=CENTRE_OPTIONS,
    ),
    MethodSpec(
        name="rpl",
        factory=RPL,
        defaults=CENTRE_DEFAULTS,
        recipes=CLASSIC_RECIPES,
        default_recipe="arpl-release",
        description="RPL: reciprocal points + radius on classifier32, logits +distance; score MSP",
        citation=RPL_CITATION,
        options=CENTRE_OPTIONS,
    ),
)
