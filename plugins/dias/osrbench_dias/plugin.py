"""DIAS, the Difficulty-Aware Simulator (Moon et al., ECCV 2022), as the DIAS release trains it.

METHODS.md §6. Four networks: the classifier C (``classifier32ABN``, the only network evaluated),
the Copycat P (a second, independently initialised ``classifier32ABN``), and a DCGAN pair G/D.
One epoch = pass A (``"gan"``) over the shuffled training stream, then pass B (``"copycat"``) over
a fresh shuffle, then both SGD schedules step (``end_epoch``).

Pass A, per real batch (x, y); C, G, D in train mode:

1. z ~ N(0, I) (drawn with the run's generator), x~ = G(z).
2. :meth:`DIAS.step_d`  D step: BCE(D(x), 1) + BCE(D(sg x~), 0) -> Adam step on D.
3. :meth:`DIAS.step_g`  G step: BCE(D(x~), 1) - beta * SCE_1(C(x~; BN 1)) -> Adam step on G only.
4. :meth:`DIAS.step_c_gan`  C step: CE(C(x; BN 0), y) + beta * SCE_1(C(G(z'); BN 1)), fresh z'
   -> SGD step on C only.

Pass B, per real batch (x, y):

1. :meth:`DIAS.step_copycat`  P train, C eval: L_P = CE(z^P, y) + lambda_pull * ½ [L1(x1^P, sg x1^C)
   + L1(x2^P, sg x2^C)] -> SGD step on P only.
2. :meth:`DIAS.step_classifier`  P eval, C train: L_C = CE(C(x; BN 0), y) + lambda_fake * ⅓
   [SCE_1(C.head(sg f^P)) + SCE_0.5(C.from_layer2(sg x1^P), y) + SCE_0.5(C.from_layer3(sg x2^P), y)]
   -> SGD step on C only.

Quirks of the release reproduced on purpose (§6.6): the injected Copycat maps run through C's BN
branch 0 in train mode, so they update the running statistics used at test time (per step bn1-3
get one update, bn4-6 two, bn7-9 three) and get dropout; the Copycat's targets come from C in eval
mode; the learning rate is 0.1 for every dataset (the Tiny-ImageNet override is ignored); and,
with ``legacy_zero_grad`` (default), ``zero_grad`` keeps zeroed gradients as the release's PyTorch
1.x did, so C's BN branch-1 affine parameters keep receiving weight decay and momentum in the
classifier step although its loss does not reach them.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

import osrbench
from osrbench import layouts
from osrbench.method import Context, Features, Method, MethodSpec, Option, Prediction
from osrbench.metrics import dias_f1_threshold
from osrbench.models import GAN_MODES, Classifier32, make_gan, resolve_gan_mode, sample_noise
from osrbench.training import OPTIM_DEFAULTS, logit_scores, lr_at, make_optimizer, set_lr, zero_grad_in_place

from osrbench_dias import losses

# The release's --optimizer flag is `optim_mode`; the generic `optimizer` key is therefore not a
# DIAS key (the C/P optimiser is fully determined by optim_mode and the keys below).
DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in OPTIM_DEFAULTS.items() if k != "optimizer"},
    # C and P: two separate SGD optimisers (lr, momentum, weight_decay of OPTIM_DEFAULTS:
    # 0.1 / 0.9 / 1e-4), MultiStepLR x0.1 stepped once per epoch after both passes.
    "milestones": [60, 120, 180, 240],
    "epochs": 200,
    "batch_size": 64,
    # sgd | adam. adam = the release's optional branch: Adam(adam_lr, betas, adam_weight_decay)
    # for C and P with adam_milestones; [] = the release's one milestone at max_epoch // 2.
    "optim_mode": "sgd",
    "adam_lr": 1e-3,
    "adam_weight_decay": 0.0,
    "adam_milestones": [],
    # losses (METHODS.md §6.2)
    "beta": 0.1,  # weight of the GAN fakes' uniform-target term (G: minus, C: plus)
    "lambda_fake": 0.1,  # weight of L_fake in the classifier step
    "lambda_pull": 1.0,  # weight of the Copycat's L1 imitation
    "alpha_hard": 0.5,  # SCE target of the injected (hard) fakes; also sets the F1 threshold
    "alpha_uniform": 1.0,  # SCE target of GAN and easy fakes (1 = uniform)
    "temperature": 1.0,  # test temperature of the MSP score
    # MLS label smoothing of C's cross-entropy on real images (0 = the release's plain CE); only
    # the recipe mls-techniques-800 sets it (README "Recipes")
    "label_smoothing": 0.0,
    # GAN (METHODS.md §3)
    "gan_lr": 2e-4,
    "gan_betas": [0.5, 0.999],
    "nz": 100,
    "gan_mode": "auto",  # auto | reference | wrap | native (reference = G32/D of the release)
    # PyTorch 1.x zero_grad (zeroed, not freed, gradients) as in the release; see the module doc.
    "legacy_zero_grad": True,
}

#: The allowed values of the keys above (checked before a run starts; ``osrbench list --options``).
OPTIONS: dict[str, Option] = {
    "lr": Option(exclusive_minimum=0, help="SGD learning rate of C and P (optim_mode sgd)"),
    "momentum": Option(minimum=0, help="SGD momentum of C and P"),
    "weight_decay": Option(minimum=0, help="SGD weight decay of C and P"),
    "betas": Option(minimum=0, exclusive_maximum=1, help="Adam betas of C and P (optim_mode adam)"),
    "schedule": Option(choices=("multistep", "mls-cosine"), help="learning-rate schedule of C and P"),
    "milestones": Option(minimum=0, help="multistep epochs of C and P (optim_mode sgd)"),
    "gamma": Option(exclusive_minimum=0, help="multistep learning-rate factor at each milestone"),
    "warmup_epochs": Option(minimum=0, help="mls-cosine: epochs of linear warm-up"),
    "optim_mode": Option(choices=("sgd", "adam"), help="optimiser of C and P (the release's --optimizer)"),
    "adam_lr": Option(exclusive_minimum=0, help="Adam learning rate of C and P (optim_mode adam)"),
    "adam_weight_decay": Option(minimum=0, help="Adam weight decay of C and P (optim_mode adam)"),
    "adam_milestones": Option(minimum=0, help="multistep epochs of C and P (optim_mode adam); [] = epochs // 2, "
                                              "the release's"),
    "beta": Option(minimum=0, help="weight of the GAN fakes' uniform-target term (G: minus, C: plus)"),
    "lambda_fake": Option(minimum=0, help="weight of L_fake in the classifier step"),
    "lambda_pull": Option(minimum=0, help="weight of the Copycat's L1 imitation"),
    "alpha_hard": Option(minimum=0, maximum=1, help="SCE target of the hard fakes; also sets the F1 threshold"),
    "alpha_uniform": Option(minimum=0, maximum=1, help="SCE target of GAN and easy fakes (1 = uniform)"),
    "temperature": Option(exclusive_minimum=0, help="test temperature of the MSP score"),
    "label_smoothing": Option(minimum=0, maximum=1, help="MLS label smoothing eps of C's cross-entropy on real "
                                                         "images (0 = off, the release's)"),
    "gan_lr": Option(exclusive_minimum=0, help="Adam learning rate of G and D (constant)"),
    "gan_betas": Option(minimum=0, exclusive_maximum=1, help="Adam betas of G and D"),
    "nz": Option(minimum=1, help="noise dimension of G"),
    "gan_mode": Option(choices=("auto", *GAN_MODES),
                       help="GAN networks for the image size (reference = G32/D of the release)"),
    "legacy_zero_grad": Option(help="PyTorch 1.x zero_grad (zeroed, not freed, gradients) as in the release"),
}

RECIPES = {
    # The release's launch settings; Tiny-ImageNet runs at 32 px (§6.6.5) with lr 0.1 (§6.6.4).
    "dias-release": {
        "*": {"epochs": 200, "batch_size": 64},
        "tiny_imagenet": {"image_size": 32},
    },
    # The release README's 800-epoch Tiny-ImageNet number (§9); other settings are not stated and
    # are taken as the release defaults (so the milestones stay [60, 120, 180, 240]).
    "dias-800": {
        "*": {"epochs": 800, "batch_size": 64},
        "tiny_imagenet": {"image_size": 32},
    },
    # The other reading of that number (the README says DIAS and ARPL+CS were run with the MLS
    # paper's techniques): the MLS release's Tiny-ImageNet settings (bash_scripts/
    # osr_train_tinyimagenet.sh, README table) for 800 epochs. Adam lr 0.001 without weight decay for
    # C and P (the MLS release's ARPLoss rate, and the DIAS release's own Adam rate), batch 128,
    # RandAugment N = 1, M = 9, label smoothing 0.9 on C's CE of real images, cosine warm restarts
    # with warm-up (2 restarts) for C and P, CIFAR normalisation, 64 px (the dataset's size).
    # Every value is in "*": on another dataset it applies these same Tiny-ImageNet values.
    "mls-techniques-800": {
        "*": {
            "epochs": 800, "batch_size": 128, "optim_mode": "adam", "adam_lr": 0.001, "adam_weight_decay": 0.0,
            "schedule": "mls-cosine", "warmup_epochs": 10, "augment": "crop_flip", "normalize": "cifar",
            "randaugment": 9, "randaugment_n": 1, "label_smoothing": 0.9,
        },
    },
}

#: The classifier-32 image size the release's G32/D were built for.
_GAN_SIZE = 32


def optimizer_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The generic optimiser/schedule config of C and P for ``cfg['optim_mode']``."""
    mode = cfg["optim_mode"]
    if mode == "sgd":
        return {**cfg, "optimizer": "sgd"}
    if mode == "adam":
        return {
            **cfg, "optimizer": "adam", "lr": cfg["adam_lr"], "weight_decay": cfg["adam_weight_decay"],
            "milestones": list(cfg["adam_milestones"]) or [cfg["epochs"] // 2],  # release: max_epoch // 2
        }
    raise ValueError(f"optim_mode must be sgd or adam, got {mode!r}")


class DIAS(Method):
    phases = ("gan", "copycat")
    graph_safe = True  # pure tensor steps: CUDA graphs may replay them (osrbench.graphs)

    # ------------------------------------------------------------------------------ setup
    def setup(self, ctx: Context) -> None:
        cfg = self.cfg = dict(ctx.config)
        self.num_classes = k = ctx.num_classes
        self.device = ctx.device
        self.generator = ctx.generator
        channels, h, w = ctx.image_shape
        self.opt_cfg = optimizer_config(cfg)
        self._set_to_none = not cfg["legacy_zero_grad"]

        # Built in the release's order (net1 = Copycat, net2 = C, netG, netD). The initial weights
        # still are not the release's draw for draw: the release also initialises its unused bn10
        # and draws each two-branch BN weight twice. Same distributions; to start from the
        # release's exact weights, load them (osrbench evaluate / load_external).
        self.copycat = ctx.place(Classifier32(k, in_channels=channels, bn_branches=2))
        self.net = ctx.place(Classifier32(k, in_channels=channels, bn_branches=2))
        self.gan_mode = resolve_gan_mode((h, w), cfg["gan_mode"])
        # The release always uses G32/D (§6.1); in reference mode they are built for 32 px whatever
        # the data size (at 64 px G then makes 32-px fakes and D sees both sizes, as the release's
        # code would with --img_size 64). Other modes are adaptations built for the data size.
        gan_size = _GAN_SIZE if self.gan_mode == "reference" else (h, w)
        self.G, self.D, _ = make_gan(gan_size, channels, self.gan_mode, nz=cfg["nz"])
        ctx.place(self.G)
        ctx.place(self.D)

        self.opt_p = make_optimizer(self.copycat.parameters(), self.opt_cfg)
        self.opt_c = make_optimizer(self.net.parameters(), self.opt_cfg)
        betas = tuple(cfg["gan_betas"])
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg["gan_lr"], betas=betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg["gan_lr"], betas=betas)
        self._g_params = [p for p in self.G.parameters() if p.requires_grad]
        self.epoch = 0
        self._apply_lr()

    def _apply_lr(self) -> None:
        lr = lr_at(self.epoch, self.opt_cfg)
        set_lr(self.opt_c, lr)
        set_lr(self.opt_p, lr)

    def _zero_grad_c(self) -> None:
        # legacy_zero_grad: zero C's existing gradients in place (the release's PyTorch 1.x
        # default) instead of freeing them. Only C is affected: its BN branch-1 affine parameters
        # keep a zero gradient in the classifier step, so SGD still applies momentum and weight
        # decay to them. For P, G and D freeing is equivalent (every parameter they train gets a
        # gradient in each of their steps; P's branch-1 BN never gets one).
        if self._set_to_none:
            self.opt_c.zero_grad(set_to_none=True)
        else:
            zero_grad_in_place(self.opt_c)  # one kernel, not one per gradient

    def _noise(self, batch: int) -> torch.Tensor:
        return sample_noise(batch, self.cfg["nz"], self.generator, self.device)

    # ------------------------------------------------------------------------------ pass A
    def step_d(self, images: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """A2: D step on a real batch and (detached) fakes; two separate D forwards (BN stats)."""
        self.D.train()
        self.opt_d.zero_grad(set_to_none=True)
        loss = losses.discriminator_loss(self.D(images), self.D(fake.detach()))
        loss.backward()
        self.opt_d.step()
        return loss.detach()

    def step_g(self, fake: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """A3: G step, L_G = BCE(D(x~), 1) - beta * SCE_1(C(x~; BN 1)); steps G only.

        D and C run in train mode (so D's and C's branch-1 running statistics update and C's
        dropouts are active). Only G's gradients are computed (``autograd.grad``): the release's
        gradients into D and C are discarded by their next ``zero_grad`` anyway (§6.6.6).
        """
        self.D.train()
        self.net.train()
        total, adv, cls = losses.generator_loss(
            self.D(fake), self.net(fake, 1), labels, self.cfg["beta"], self.cfg["alpha_uniform"]
        )
        grads = torch.autograd.grad(total, self._g_params)
        for p, g in zip(self._g_params, grads):
            p.grad = g
        self.opt_g.step()
        return {"g": total.detach(), "g_adv": adv.detach(), "g_cls": cls.detach()}

    def step_c_gan(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """A4: C step, CE(C(x; BN 0), y) + beta * SCE_1(C(G(z'); BN 1)) with fresh noise z'.

        G runs in train mode (its BN statistics update as in the release) without a graph: the
        release's gradients into G are cleared by the next G ``zero_grad`` (§6.6.6).
        """
        self.net.train()
        self.G.train()
        self._zero_grad_c()
        logits_real = self.net(images, 0)
        with torch.no_grad():
            fake = self.G(self._noise(images.shape[0]))
        total, ce, fake_term = losses.gan_classifier_loss(
            logits_real, labels, self.net(fake, 1), self.cfg["beta"], self.cfg["alpha_uniform"],
            self.cfg["label_smoothing"],
        )
        total.backward()
        self.opt_c.step()
        return {"c": total.detach(), "c_ce": ce.detach(), "c_gan": fake_term.detach()}

    def gan_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of pass A (steps A1-A4 in the release's order)."""
        self.net.train()
        self.G.train()
        self.D.train()
        fake = self.G(self._noise(images.shape[0]))
        out = {"d": self.step_d(images, fake)}
        out.update(self.step_g(fake, labels))
        out.update(self.step_c_gan(images, labels))
        return out

    # ------------------------------------------------------------------------------ pass B
    def step_copycat(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """B1: Copycat step, P train and C eval (targets: C's x1, x2 without a graph); steps P only."""
        self.copycat.train()
        self.net.eval()
        x1_p, x2_p, _, logits_p = self.copycat.features(images, 0)
        with torch.no_grad():
            x1_c, x2_c, _, _ = self.net.features(images, 0)
        self.opt_p.zero_grad(set_to_none=True)
        total, ce, pull = losses.copycat_loss(logits_p, labels, x1_p, x1_c, x2_p, x2_c, self.cfg["lambda_pull"])
        total.backward()
        self.opt_p.step()
        return {"p": total.detach(), "p_ce": ce.detach(), "pull": pull.detach()}

    def step_classifier(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """B2: classifier step, P eval (recomputed after B1, no graph) and C train; steps C only.

        C's forwards in the release's order: the real batch (bn1-9), x1^P through from_layer2
        (bn4-9), x2^P through from_layer3 (bn7-9), all with BN branch 0 in train mode; then
        head(f^P). Three separate forwards, never one concatenated batch (BN batch statistics).
        """
        self.copycat.eval()
        self.net.train()
        with torch.no_grad():
            x1_p, x2_p, f_p, _ = self.copycat.features(images, 0)
        self._zero_grad_c()
        logits_c = self.net(images, 0)
        h_hard1 = self.net.from_layer2(x1_p, 0)
        h_hard2 = self.net.from_layer3(x2_p, 0)
        h_easy = self.net.head(f_p)
        cfg = self.cfg
        l_fake = losses.fake_loss(h_easy, h_hard1, h_hard2, labels, cfg["alpha_uniform"], cfg["alpha_hard"])
        total, ce = losses.classifier_loss(logits_c, labels, l_fake, cfg["lambda_fake"], cfg["label_smoothing"])
        total.backward()
        self.opt_c.step()
        return {"c": total.detach(), "c_ce": ce.detach(), "fake": l_fake.detach()}

    def copycat_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of pass B (B1 then B2)."""
        out = self.step_copycat(images, labels)
        out.update(self.step_classifier(images, labels))
        return out

    # ------------------------------------------------------------------------------ Method API
    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if phase == "gan":
            return self.gan_step(images, labels)
        if phase == "copycat":
            return self.copycat_step(images, labels)
        raise ValueError(f"unknown phase {phase!r}; DIAS has phases {self.phases}")

    def end_epoch(self, epoch: int) -> None:
        # Both schedulers step once per epoch, after both passes.
        self.epoch = epoch + 1
        self._apply_lr()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        logits = self.net(images, 0)
        scores = logit_scores(logits, self.cfg["temperature"], self.cfg["score_dtype"])
        return Prediction(logits=logits, score=scores["msp"], scores=scores)

    def features(self, images: torch.Tensor) -> Features:
        self.net.eval()
        f = self.net.pooled(images, 0)
        return Features(penultimate=f, logits=self.net.head(f))

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return self.net.head(penultimate)

    def f1_rule(self) -> tuple[str, float]:
        # θ = α/K + (1 − α) − 0.05 with the release's smoothing α (= alpha_hard, 0.5), on MSP.
        return "score", dias_f1_threshold(self.num_classes, self.cfg["alpha_hard"])

    def adaptations(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.gan_mode == "reference" else {"gan_mode": self.gan_mode}
        if self.cfg["normalize"] == "cifar":  # mls-techniques-800: the release never normalises
            out["gan_range"] = (
                "real images are CIFAR-normalised while the generator's sigmoid output stays in [0, 1]; "
                "D and C see the two ranges (as in the MLS paper's (ARPL+CS)+ recipe)"
            )
        return out

    #: The DIAS release's ``save_checkpoint`` file (or its classifier's bare state dict).
    external_layouts = ("dias-release",)

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The DIAS release checkpoint: ``net2_state_dict`` is C (:attr:`net`), ``net1_state_dict`` the
        Copycat, ``netG_state_dict`` / ``netD_state_dict`` G and D. G and D are loaded when this run's
        are the release's (``gan_mode`` reference) and dropped otherwise; what the file does not hold
        (a bare classifier's Copycat, G, D; every optimiser) keeps its set-up state."""
        parts = layouts.dias_release(weights)
        layouts.load_module(self.net, parts["net"], "the DIAS release classifier (net2, classifier32ABN)")
        if "copycat" in parts:
            layouts.load_module(self.copycat, parts["copycat"], "the DIAS release Copycat (net1_state_dict)")
        for part, module in (("G", self.G), ("D", self.D)):
            if part not in parts:
                continue
            key = layouts.DIAS_NETWORKS[part]
            if self.gan_mode == "reference":
                layouts.load_module(module, parts[part], f"the DIAS release {part} ({key})")
            else:
                layouts.drop_prefix(weights, key + ".", f"the release's {part} (G32/D); this run's {part} is "
                                                         f"gan_mode {self.gan_mode!r}, an adaptation")

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(), "copycat": self.copycat.state_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_c": self.opt_c.state_dict(), "opt_p": self.opt_p.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.copycat.load_state_dict(state["copycat"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.opt_p.load_state_dict(state["opt_p"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.epoch = state["epoch"]
        self._apply_lr()


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(
        MethodSpec(
            name="dias",
            factory=DIAS,
            defaults=DEFAULTS,
            recipes=RECIPES,
            default_recipe="dias-release",
            description="DIAS: classifier trained against GAN, Copycat-feature and Copycat-map fakes; score MSP",
            citation=(
                "Moon, Park, Kong, Lee, Kim, Hwang, \"Difficulty-Aware Simulator for Open Set Recognition\", "
                "ECCV 2022 (code: wjun0830/Difficulty-Aware-Simulator)"
            ),
            options=OPTIONS,
        )
    )
