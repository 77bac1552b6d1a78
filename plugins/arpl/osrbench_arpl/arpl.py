"""ARPL and ARPL+CS (METHODS.md §5), faithful to the ARPL release (``iCGY96/ARPL``, HEAD 3ede8b3).

- ``arpl``: ``classifier32`` (single BN) + K reciprocal points P (K×128, init 0.1·N(0, 1)) and one
  shared scalar radius R (init 0). Logits z_k = d_e(f, P_k) − d_d(f, P_k) with
  d_e = ‖f − P_k‖²/D (expanded as the release: f·f − 2 f·P_k + P_k·P_k, over D) and d_d = f·P_k.
  Loss = CE(z/τ, y) + λ·mean_i max(0, d_e(f_i, P_{y_i}) − R + 1). P and R live in the classifier's
  optimiser, so its weight decay acts on them. The backbone's Linear head is unused.
- ``arpl-cs``: ``classifier32ABN`` (two BN branches) + the DCGAN pair; one epoch = pass ``cs``
  (per batch: D step, G step, classifier step with fresh noise) then pass ``arpl`` (plain ARPL,
  BN branch 0); the classifier schedule steps once per epoch after both passes. Release quirk
  kept: its PyTorch < 2.0 ``zero_grad()`` zero-filled gradients, so in the plain pass the BN
  branch-1 parameters still move by momentum / weight decay (see ``ARPLCS._fill_release_grads``).

Test: eval mode, BN branch 0, score = max_k z_k (raw logits, float64). The MSP of the same logits
is stored too (for the DIAS macro-F1 rule, see :meth:`ARPL.f1_rule`).

Every train step is pure tensor code: no ``.item()``, no host synchronisation, losses returned as
detached 0-d tensors.

The release's other two losses, GCPL and RPL (same network, optimiser and ``train`` loop), build on
:class:`ARPL` in :mod:`osrbench_arpl.gcpl_rpl`; :mod:`osrbench_arpl.plugin` registers all four.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from osrbench import layouts
from osrbench.method import Context, Features, Method, MethodSpec, Option, Prediction
from osrbench.metrics import dias_f1_threshold
from osrbench.models import GAN_MODES, make_gan, sample_noise
from osrbench.models.backbones import BACKBONE_DEFAULTS, BACKBONE_OPTIONS, BackboneError, make_network, network_adaptations
from osrbench.training import OPTIM_DEFAULTS, OPTIM_OPTIONS, bce, logit_scores, lr_at, make_optimizer, mls_smoothed_cross_entropy, set_lr

CITATION = (
    'Chen, Peng, Wang, Tian, "Adversarial Reciprocal Points Learning for Open Set Recognition", '
    "IEEE TPAMI 2021"
)

#: ARPL's own keys (release names: --temp, --weight-pl; the margin is the release's
#: MarginRankingLoss(margin=1.0)).
DEFAULTS: dict[str, Any] = {
    **OPTIM_DEFAULTS,
    "temp": 1.0,  # τ of the CE term (training only; the test score uses raw logits)
    "weight_pl": 0.1,  # λ, weight of the radius (margin-ranking) term
    "margin": 1.0,  # margin of max(0, d_e(f, P_y) − R + margin)
    "label_smoothing": 0.0,  # MLS convention on the CE term: 1 − ε true class, ε/(K−1) elsewhere
    **BACKBONE_DEFAULTS,  # classifier32 | resnet50 | vit_b16 (P and R are points of its feature width)
}

#: ARPL+CS adds the confusing-sample GAN (release: --beta, --gan_lr, --nz; Adam betas (0.5, 0.999)).
CS_DEFAULTS: dict[str, Any] = {
    **DEFAULTS,
    "beta": 0.1,  # β, weight of the confusion loss F on generated images (G step and classifier step)
    "gan_lr": 2e-4,  # Adam lr of G and D (constant)
    "gan_betas": [0.5, 0.999],
    "nz": 100,  # noise dimension
    "gan_mode": "auto",  # auto | reference | wrap | native (osrbench.models.resolve_gan_mode) | mls-release
}

#: The allowed values of the keys above (checked before a run starts; ``osrbench list --options``).
OPTIONS: dict[str, Option] = {
    **OPTIM_OPTIONS,
    "temp": Option(exclusive_minimum=0, help="temperature tau of the CE term (training only)"),
    "weight_pl": Option(minimum=0, help="lambda, weight of the radius (margin-ranking) term"),
    "margin": Option(help="margin of max(0, d_e(f, P_y) - R + margin)"),
    "label_smoothing": Option(minimum=0, maximum=1, help="MLS label smoothing eps of the CE term (0 = off)"),
    **BACKBONE_OPTIONS,
}

#: ARPL+CS's options: ARPL's and the GAN's.
CS_OPTIONS: dict[str, Option] = {
    **OPTIONS,
    "beta": Option(minimum=0, help="beta, weight of the confusion loss on generated images"),
    "gan_lr": Option(exclusive_minimum=0, help="Adam learning rate of G and D (constant)"),
    "gan_betas": Option(minimum=0, exclusive_maximum=1, help="Adam betas of G and D"),
    "nz": Option(minimum=1, help="noise dimension of G"),
    "gan_mode": Option(choices=("auto", *GAN_MODES, "mls-release"),
                       help="GAN networks for the image size (osrbench.models.resolve_gan_mode); mls-release: "
                            "the MLS release's G64/D for any size >= 64 (G32/D below), fakes not resized"),
}

# MLS-paper recipe (METHODS.md §4.2): RandAugment magnitude per dataset.
_MLS_M = {"mnist": 8, "fashion-mnist": 8, "svhn": 18, "cifar10": 6, "cifar+10": 6, "cifar+50": 6, "tiny_imagenet": 9}


def _recipes(mls_m: dict[str, int]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        # ARPL release (§5.1/§5.2): SGD 0.1, MultiStep [30, 60, 90, 120], 100 epochs, batch 64;
        # Tiny-ImageNet: Adam 1e-3 without weight decay, milestones kept, 64 px.
        "arpl-release": {
            "*": {},
            "tiny_imagenet": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
        },
        # MLS paper's "ARPL+" / "(ARPL+CS)+" (§4.2, §5.2): 600 epochs, batch 128, cosine restarts
        # with warm-up, RandAugment(1, M), CIFAR normalisation; TIN Adam 1e-3 (not the 0.01 of
        # MLS), no weight decay, label smoothing 0.9 on the CE term.
        "mls-paper": {
            "*": {"epochs": 600, "batch_size": 128, "schedule": "mls-cosine", "normalize": "cifar"},
            **{name: {"randaugment": m} for name, m in mls_m.items()},
            "tiny_imagenet": {
                "randaugment": mls_m["tiny_imagenet"], "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                "label_smoothing": 0.9,
            },
        },
    }


#: The MLS release's Semantic Shift Benchmark runs of ARPLoss (bash_scripts/osr_finegrained_train.sh,
#: --loss ARPLoss, no --cs: its osr.py builds ARPL+CS only on classifier32, so plain ARPL is what it
#: trains on the SSB): SGD lr 0.001 (momentum 0.9, weight decay 1e-4 on the network, the points
#: and the radius), batch 32, 600 epochs, 448 px, RandAugment N = 2, cosine warm restarts with
#: warm-up (2 restarts), CIFAR normalisation; M and label smoothing (on the CE term) per dataset
#: from the README's ARPL + CS table. Stanford Cars has no row.
MLS_SSB = {
    "*": {
        "epochs": 600, "batch_size": 32, "image_size": 448, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
        "weight_decay": 1e-4, "schedule": "mls-cosine", "warmup_epochs": 10, "augment": "crop_flip",
        "normalize": "cifar", "randaugment_n": 2, "backbone": "resnet50",  # weights: --set backbone_weights=PATH
    },
    "cub": {"randaugment": 30, "label_smoothing": 0.2},
    "aircraft": {"randaugment": 18, "label_smoothing": 0.1},
}

#: The recipes GCPL and RPL share with ARPL (the MLS release trains neither loss, so no mls-ssb).
CLASSIC_RECIPES = _recipes(_MLS_M)
RECIPES = {**CLASSIC_RECIPES, "mls-ssb": MLS_SSB}
#: "(ARPL+CS)+" uses RandAugment M = 15 on CIFAR-10 (§5.2); the other datasets keep §4.2's M.
#: ``mls-techniques-800`` is one reading of the DIAS release README's ARPL+CS number (Tiny-ImageNet,
#: "800 epochs training" with the MLS paper's techniques; README.md of this plugin): the MLS
#: release's Tiny-ImageNet ARPLoss settings (Adam lr 0.001 without weight decay, batch 128,
#: RandAugment N = 1, M = 9, label smoothing 0.9, cosine warm restarts with warm-up, CIFAR
#: normalisation, 64 px = the dataset's size) for 800 epochs. It sets every value in "*", so on
#: another dataset it applies these same Tiny-ImageNet values.
CS_RECIPES = {
    **_recipes({**_MLS_M, "cifar10": 15}),
    "mls-techniques-800": {
        "*": {
            "epochs": 800, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "weight_decay": 0.0,
            "schedule": "mls-cosine", "warmup_epochs": 10, "augment": "crop_flip", "normalize": "cifar",
            "randaugment": 9, "randaugment_n": 1, "label_smoothing": 0.9,
        },
    },
}


# ------------------------------------------------------------------------------------ losses


def distance_logits(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """d_e(f, P_k) = ‖f − P_k‖²/D for every (sample, point), (B, K), expanded as the release."""
    f2 = features.pow(2).sum(1, keepdim=True)
    p2 = points.pow(2).sum(1)
    return (f2 - 2.0 * features @ points.t() + p2) / features.shape[1]


def arpl_logits(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """z_k = d_e(f, P_k) − d_d(f, P_k) with d_d = f·P_k (the release's ``dist_l2_p - dist_dot_p``)."""
    dot = features @ points.t()
    f2 = features.pow(2).sum(1, keepdim=True)
    p2 = points.pow(2).sum(1)
    return (f2 - 2.0 * dot + p2) / features.shape[1] - dot


def arpl_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    points: torch.Tensor,
    radius: torch.Tensor,
    temp: float = 1.0,
    weight_pl: float = 0.1,
    margin: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, loss)`` of ARPL: CE(z/τ, y) + λ·mean(max(0, d_e(f, P_y) − R + margin)).

    The radius term is the release's ``MarginRankingLoss(margin)(R, d, +1)``; like the release it
    measures the distance to the own point directly, ``(f − P_y)².mean(1)``. With
    ``label_smoothing`` ε > 0 the CE target is the MLS convention (1 − ε / ε/(K−1)).
    """
    logits = arpl_logits(features, points)
    ce = mls_smoothed_cross_entropy(logits if temp == 1 else logits / temp, labels, label_smoothing)  # z / 1 == z
    own = (features - points[labels]).pow(2).mean(1)
    reg = (own - radius + margin).clamp_min(0).mean()
    return logits, ce + weight_pl * reg


def fake_loss(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Confusion loss F = exp(mean_i Σ_k p_ik log p_ik), p_i = softmax_k d_e(f_i, P_k).

    Distance term only, no temperature, exponential after the batch mean (release ``fake_loss``).
    ``p log p`` is formed from ``log_softmax`` (same value; no 0·log 0 = NaN when a p underflows).
    """
    logp = F.log_softmax(distance_logits(features, points), dim=1)
    return (logp.exp() * logp).sum(1).mean().exp()


class ReciprocalPoints(nn.Module):
    """The release's criterion parameters: ``points`` (K×D, 0.1·N(0, 1)) and ``radius`` (shape (1,), 0).

    The release's ``Dist`` draws its centres as ``0.1 * torch.randn(K * num_centers, D)`` from the
    global RNG, after the network; ARPLoss and RPLoss then add the radius (no draw), GCPLoss has
    none (``radius=False``). ``num_centers`` > 1 (GCPL, RPL) stacks the centres class-major.
    """

    def __init__(self, num_classes: int, feat_dim: int = 128, num_centers: int = 1, radius: bool = True) -> None:
        super().__init__()
        self.points = nn.Parameter(0.1 * torch.randn(num_classes * num_centers, feat_dim))
        if radius:
            self.radius = nn.Parameter(torch.zeros(1))


# ------------------------------------------------------------------------------------ methods


class ARPL(Method):
    """Plain ARPL (§5.1): one pass per epoch, BN branch 0."""

    phases: tuple[str, ...] = ("arpl",)
    #: The phase of the plain step (the release's ``train``: real images, BN branch 0).
    plain_phase = "arpl"
    #: The ``logit_scores`` entry that is the main score.
    score_name = "mls"
    bn_branches = 1
    graph_safe = True  # pure tensor steps: CUDA graphs may replay them (osrbench.graphs)

    def setup(self, ctx: Context) -> None:
        self.cfg = ctx.config
        if self.cfg["temp"] <= 0:
            raise ValueError(f"temp must be > 0, got {self.cfg['temp']!r}")
        self.num_classes = ctx.num_classes
        self.device = ctx.device
        self.image_shape = tuple(ctx.image_shape)
        # Release order: network, (GAN), criterion (reciprocal points and radius).
        self.backbone = self.cfg.get("backbone", "classifier32")  # .get: configs of runs from before the option
        self._check_backbone()
        self.net = ctx.place(make_network(self.backbone, ctx.num_classes, in_channels=ctx.image_shape[0],
                                          image_size=ctx.image_shape[1], weights=self.cfg.get("backbone_weights", ""),
                                          bn_branches=self.bn_branches))
        self._build_gan(ctx)
        self.rp = self._build_criterion(ctx).to(ctx.device)
        # One optimiser over the backbone and {P, R} (weight decay acts on P and R, §10.12). The
        # unused fc never receives a gradient, so the optimiser never changes it (as in the release).
        self.opt = make_optimizer([{"params": self.net.parameters()}, {"params": self.rp.parameters()}], self.cfg)
        self.epoch = 0
        set_lr(self.opt, lr_at(0, self.cfg))

    def _check_backbone(self) -> None:
        """Every backbone carries plain ARPL (its points are of the backbone's feature width)."""

    def _build_gan(self, ctx: Context) -> None:
        """No GAN in plain ARPL."""

    def _build_criterion(self, ctx: Context) -> nn.Module:
        """The loss's parameters, drawn after the network (and GAN) as in the release: P and R."""
        return ReciprocalPoints(ctx.num_classes, self.net.feat_dim)

    def _train_mode(self) -> None:
        for m in self._modules_list():
            if not m.training:
                m.train()

    def _modules_list(self) -> list[nn.Module]:
        return [self.net]

    # -------------------------------------------------------------------- training
    def criterion_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of the pooled features (ARPL: :func:`arpl_loss`)."""
        _, loss = arpl_loss(
            features, labels, self.rp.points, self.rp.radius, self.cfg["temp"], self.cfg["weight_pl"],
            self.cfg["margin"], self.cfg["label_smoothing"],
        )
        return loss

    def _arpl_terms(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion_loss(self.net.pooled(images, 0), labels)

    def arpl_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One plain step (the release's ``train``: real images, BN branch 0); returns the detached loss."""
        self._train_mode()
        loss = self._arpl_terms(images, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._fill_release_grads()
        self.opt.step()
        return loss.detach()

    def _fill_release_grads(self) -> None:
        """Hook before a plain-pass classifier step (ARPL+CS reproduces a zero_grad quirk there)."""

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if phase == self.plain_phase:
            return {"loss": self.arpl_step(images, labels)}
        raise ValueError(f"unknown phase {phase!r} (phases: {self.phases})")

    def end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        set_lr(self.opt, lr_at(self.epoch, self.cfg))

    # -------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        logits = self.head(self.net.pooled(images, 0))
        scores = logit_scores(logits, dtype=self.cfg["score_dtype"])
        return Prediction(logits=logits, score=scores[self.score_name], scores=scores)

    def features(self, images: torch.Tensor) -> Features:
        self.net.eval()
        f = self.net.pooled(images, 0)
        return Features(penultimate=f, logits=self.head(f))

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        # ARPL's logits are distances to the reciprocal points, not affine in f (ViM does not apply).
        return arpl_logits(penultimate, self.rp.points)

    def adaptations(self) -> dict[str, Any]:
        return network_adaptations(self.net, self.image_shape[0])

    def f1_rule(self) -> tuple[str, float]:
        # The ARPL release has no macro-F1 rule. For head-to-head macro-F1 with DIAS, osrbench
        # applies the DIAS rule (MSP > α/K + (1 − α) − 0.05) to the softmax of ARPL's logits.
        return "msp", dias_f1_threshold(self.num_classes)

    # -------------------------------------------------------------------- external weights
    #: ``osr.py --loss ARPLoss`` (``--cs`` for ARPL+CS) of the ARPL release.
    external_layouts = ("arpl-release",)

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The ARPL release's network (``classifier32``; ``classifier32ABN`` for ARPL+CS) and its
        ``ARPLoss`` criterion, whose ``points`` and ``radius`` become :attr:`rp`. The release does not
        save ARPL+CS's GAN: G and D keep their set-up weights (evaluation does not use them)."""
        if self.backbone != "classifier32":
            raise layouts.LayoutError(f"--layout {layout} holds a classifier32 network; this run's backbone is "
                                      f"{self.backbone} (drop --set backbone)")
        net, criterion = layouts.arpl_release(weights)
        if criterion is None:
            raise layouts.LayoutError(
                f"{'arpl-cs' if self.bn_branches == 2 else 'arpl'} needs the ARPL release's criterion as well as its "
                "network: add --weights <name>__criterion.pth (ARPLoss: points, radius)")
        kind = "classifier32ABN" if self.bn_branches == 2 else "classifier32"
        layouts.load_module(self.net, net, f"the ARPL release network ({kind})")
        layouts.load_module(self.rp, criterion, "the ARPL release criterion (ARPLoss)")

    # -------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "rp": self.rp.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.rp.load_state_dict(state["rp"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = int(state["epoch"])
        set_lr(self.opt, lr_at(self.epoch, self.cfg))


class ARPLCS(ARPL):
    """ARPL+CS (§5.2): pass ``cs`` (D, G, classifier steps per batch) then pass ``arpl``."""

    phases: tuple[str, ...] = ("cs", "arpl")
    bn_branches = 2

    def _check_backbone(self) -> None:
        """ARPL+CS trains classifier32ABN only: the MLS release's ``osr.py`` (lines 143-147) raises
        ``NotImplementedError`` for ``--cs`` with any other model, so no release trains it on ResNet-50 or ViT."""
        if self.backbone != "classifier32":
            raise BackboneError(f"arpl-cs trains the two-branch-BN classifier32 only (the MLS release's osr.py raises "
                                f"NotImplementedError for --cs with another model); backbone {self.backbone} is "
                                "offered by arpl, gcpl and rpl")

    def _build_gan(self, ctx: Context) -> None:
        c, h, w = ctx.image_shape
        if self.cfg["gan_mode"] == "mls-release":
            # The MLS release's osr.py (lines 163-168): Generator/Discriminator (64 px) for any image size >= 64,
            # the 32-px pair below. train_cs feeds D the real batch at the run's size and G's fakes, at the GAN's
            # size, to D and the classifier unresized (both end in a global pool).
            if h != w or h < 32:
                raise ValueError(f"gan_mode mls-release needs square images of at least 32 px, got {h}x{w}")
            self.gan_size = 64 if h >= 64 else 32
            self.G, self.D, _ = make_gan(self.gan_size, c, "reference", nz=self.cfg["nz"])
            self.gan_mode = "reference" if h == self.gan_size else "mls-release"  # at 32 and 64 px: the reference
        else:
            self.G, self.D, self.gan_mode = make_gan((h, w), c, self.cfg["gan_mode"], nz=self.cfg["nz"])
        ctx.place(self.G)
        ctx.place(self.D)
        self.generator = ctx.generator
        self.nz = self.cfg["nz"]
        self.beta = self.cfg["beta"]
        betas = tuple(self.cfg["gan_betas"])
        self.optD = torch.optim.Adam(self.D.parameters(), lr=self.cfg["gan_lr"], betas=betas)
        self.optG = torch.optim.Adam(self.G.parameters(), lr=self.cfg["gan_lr"], betas=betas)
        self._g_params = list(self.G.parameters())
        # BN branch-1 affine parameters: only generated images reach them. Their release-quirk
        # gradient in the plain pass is zero: one persistent zero tensor each, made once (the
        # optimisers never write into a gradient, and every backward here follows a zero_grad
        # that drops it first).
        self._branch1_params = [p for name, p in self.net.named_parameters() if ".bns.1." in name]
        self._branch1_zeros = [torch.zeros_like(p) for p in self._branch1_params]
        self._cs_started = False

    def _modules_list(self) -> list[nn.Module]:
        return [self.net, self.G, self.D]

    def _fill_release_grads(self) -> None:
        """Give the BN branch-1 parameters zero gradients in the plain ``arpl`` pass (release quirk).

        The release ran PyTorch < 2.0, whose ``optimizer.zero_grad()`` zero-fills gradients instead
        of dropping them: once pass CS has given the branch-1 BN parameters a gradient, they keep a
        zero one, so in the plain pass (real images, branch 0 only) SGD still moves them by its
        momentum and weight decay (Adam by its moments on Tiny-ImageNet). With
        ``zero_grad(set_to_none=True)`` the optimiser would skip them; zero-filling exactly these
        parameters restores the release's update. The unused ``fc`` never had a gradient in the
        release either and stays untouched.
        """
        if self._cs_started:
            for p, zero in zip(self._branch1_params, self._branch1_zeros):
                if p.grad is None:
                    p.grad = zero

    def noise(self, batch: int) -> torch.Tensor:
        """z ~ N(0, I), (batch, nz, 1, 1), drawn with the run's checkpointed generator."""
        return sample_noise(batch, self.nz, self.generator, self.device)

    # ---------------------------------------------------------------- the three CS sub-steps
    def d_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """BCE(D(x), 1) + BCE(D(detach(x̃)), 0); Adam step on D only."""
        self.optD.zero_grad(set_to_none=True)
        out_real = self.D(real)
        out_fake = self.D(fake.detach())
        err = bce(out_real, 1.0) + bce(out_fake, 0.0)
        err.backward()
        self.optD.step()
        return err.detach()

    def g_step(self, fake: torch.Tensor) -> torch.Tensor:
        """BCE(D(x̃), 1) + β·F(C_1(x̃)); Adam step on G only.

        The release backpropagates into D, the classifier and P too and zeroes those gradients
        before their next steps; here the backward is restricted to G's parameters, so nothing
        else ever receives (or is updated by) a gradient of this loss. D and the classifier still
        run in train mode, so their BN running statistics update as in the release (the
        classifier's on branch 1).
        """
        self.optG.zero_grad(set_to_none=True)
        out = self.D(fake)
        err_g = bce(out, 1.0)
        err_f = fake_loss(self.net.pooled(fake, 1), self.rp.points)
        loss = err_g + self.beta * err_f
        loss.backward(inputs=self._g_params)
        self.optG.step()
        return loss.detach()

    def classifier_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ARPL loss on C_0(x) + β·F(C_1(G(z'))) with fresh noise z'; one classifier-optimiser step.

        G runs in train mode (as in the release, its BN running statistics update) but without a
        graph: the release's gradients into G here are discarded before G's next step.
        """
        self.opt.zero_grad(set_to_none=True)
        loss = self._arpl_terms(images, labels)
        with torch.no_grad():
            fake = self.G(self.noise(images.shape[0]))
        total = loss + self.beta * fake_loss(self.net.pooled(fake, 1), self.rp.points)
        total.backward()
        self.opt.step()
        self._cs_started = True
        return total.detach()

    def cs_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of pass CS: noise → G, D step, G step, classifier step (release order)."""
        self._train_mode()
        fake = self.G(self.noise(images.shape[0]))
        d = self.d_step(images, fake)
        g = self.g_step(fake)
        loss = self.classifier_step(images, labels)
        return {"loss": loss, "g": g, "d": d}

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if phase == "cs":
            return self.cs_step(images, labels)
        return super().train_step(phase, images, labels)

    # ---------------------------------------------------------------- records and checkpoints
    def adaptations(self) -> dict[str, Any]:
        out: dict[str, Any] = super().adaptations()
        if self.gan_mode == "mls-release":
            out["gan_mode"] = self.gan_mode
            out["gan_image_size"] = [self.gan_size, self.gan_size]
            out["gan_channels"] = self.image_shape[0]
        elif self.gan_mode != "reference":
            out["gan_mode"] = self.gan_mode
            out["gan_image_size"] = list(self.image_shape[1:])
            out["gan_channels"] = self.image_shape[0]
        if self.cfg["normalize"] == "cifar":
            out["gan_range"] = (
                "real images are CIFAR-normalised while the generator's sigmoid output stays in [0, 1]; "
                "D and the classifier see the two ranges (as in the MLS paper's (ARPL+CS)+ recipe)"
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            G=self.G.state_dict(), D=self.D.state_dict(), optG=self.optG.state_dict(), optD=self.optD.state_dict(),
            cs_started=self._cs_started,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.optG.load_state_dict(state["optG"])
        self.optD.load_state_dict(state["optD"])
        self._cs_started = bool(state["cs_started"])


# ------------------------------------------------------------------------------------ registration

SPECS = (
    MethodSpec(
        name="arpl",
        factory=ARPL,
        defaults=DEFAULTS,
        recipes=RECIPES,
        default_recipe="arpl-release",
        description="ARPL: reciprocal points + shared radius on classifier32; score max logit",
        citation=CITATION,
        options=OPTIONS,
    ),
    MethodSpec(
        name="arpl-cs",
        factory=ARPLCS,
        defaults=CS_DEFAULTS,
        recipes=CS_RECIPES,
        default_recipe="arpl-release",
        description="ARPL+CS: ARPL with GAN confusing samples on two-branch-BN classifier32",
        citation=CITATION,
        options=CS_OPTIONS,
    ),
)
