"""Class Anchor Clustering (Miller et al., WACV 2021) as ``dimitymiller/cac-openset`` trains it.

The specification, with the release's file and line for each rule, is this plugin's README.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

import osrbench
from osrbench import layouts
from osrbench.method import Context, Features, Method, MethodSpec, Option, Prediction
from osrbench.training import (
    OPTIM_DEFAULTS,
    OPTIM_OPTIONS,
    lr_at,
    make_optimizer,
    set_lr,
    zero_grad_in_place,
)
from osrbench.models.backbones import BACKBONE_DEFAULTS, BACKBONE_OPTIONS, load_weights, make_backbone
from osrbench_cac.network import BackboneOpenSetClassifier, OpenSetClassifier

# The release's per-trial input statistics (datasets/config.json data_mean / data_std, trials 0-4).
RELEASE_STATS: dict[str, tuple[list[list[float]], list[list[float]]]] = {
    "mnist": ([[0.1321], [0.1343], [0.1382], [0.1248], [0.1421]],
              [[0.3101], [0.3110], [0.3154], [0.3023], [0.3193]]),
    "svhn": ([[0.4479, 0.4485, 0.4492], [0.4491, 0.4498, 0.4509], [0.4499, 0.4506, 0.4513],
              [0.4495, 0.4500, 0.4507], [0.4503, 0.4503, 0.4508]],
             [[0.2008, 0.1997, 0.1998], [0.1992, 0.1981, 0.1984], [0.1986, 0.1975, 0.1977],
              [0.2014, 0.2001, 0.2002], [0.2000, 0.1989, 0.1994]]),
    "cifar10": ([[0.4858, 0.4771, 0.4326], [0.4850, 0.4598, 0.4032], [0.4882, 0.4847, 0.4552],
                 [0.4872, 0.4836, 0.4498], [0.4917, 0.4810, 0.4498]],
                [[0.2422, 0.2374, 0.2547], [0.2452, 0.2397, 0.2474], [0.2454, 0.2408, 0.2622],
                 [0.2465, 0.2432, 0.2595], [0.2512, 0.2487, 0.2685]]),
    "cifar+": ([[0.4965, 0.5063, 0.5173]] * 5, [[0.2599, 0.2575, 0.2745]] * 5),
    "tiny_imagenet": ([[0.4795, 0.4367, 0.3741], [0.4927, 0.4622, 0.4247], [0.4585, 0.4563, 0.4133],
                       [0.4664, 0.4517, 0.4131], [0.4766, 0.4387, 0.3951]],
                      [[0.2787, 0.2707, 0.2759], [0.2742, 0.2692, 0.2828], [0.2696, 0.2590, 0.2752],
                       [0.2779, 0.2712, 0.2865], [0.2822, 0.2678, 0.2841]]),
}


def trial_mean(rows: list[list[float]]) -> list[float]:
    """The mean over the five trials, per channel (rounded to 6 places: a stable config value)."""
    return [round(sum(r[c] for r in rows) / len(rows), 6) for c in range(len(rows[0]))]


def _stats(name: str) -> dict[str, list[float]]:
    mean, std = RELEASE_STATS[name]
    return {"input_mean": trial_mean(mean), "input_std": trial_mean(std)}


DEFAULTS: dict[str, Any] = {
    **OPTIM_DEFAULTS,
    # datasets/config.json, CIFAR10 (openset_training; the recipe sets every dataset's own)
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-6,
    "milestones": [150],
    "gamma": 0.1,
    "alpha": 10.0,  # --alpha
    "lbda": 0.1,  # --lbda
    "dropout": 0.2,
    "channels": 3,
    **_stats("cifar10"),
    "reset_momentum": True,
    "fit_flip": True,
    # "release": the CAC release's own encoder (not classifier32); resnet50 / vit_b16 under its anchored layer
    **BACKBONE_DEFAULTS,
    "backbone": "release",
}

OPTIONS: dict[str, Option] = {
    **OPTIM_OPTIONS,
    "alpha": Option(exclusive_minimum=0, help="anchor magnitude: a_k = alpha * e_k (release --alpha 10)"),
    "lbda": Option(minimum=0, help="weight of the anchor term of the CAC loss (release --lbda 0.1)"),
    "dropout": Option(minimum=0, exclusive_maximum=1, help="Dropout2d after each encoder block"),
    "channels": Option(choices=(1, 3), help="network input channels (1: the first of the replicated grey channels)"),
    "input_std": Option(exclusive_minimum=0, help="per-channel std the method divides its inputs by"),
    "reset_momentum": Option(choices=(True, False), help="zero SGD momentum at each milestone (the release's "
                                                         "second stage builds a new optimiser)"),
    "fit_flip": Option(choices=(True, False), help="average flipped training images into the test anchors too"),
    **BACKBONE_OPTIONS,
    "backbone": Option(choices=("release", "resnet50", "vit_b16"),
                       help="encoder under the anchored logit layer: release (the CAC release's nine-conv encoder), "
                            "resnet50 (2048-d) or vit_b16 (768-d, image size a multiple of 16)"),
}

_MNIST = {"epochs": 70, "milestones": [35], "weight_decay": 5e-6, "channels": 1, "fit_flip": False, **_stats("mnist")}
_CIFAR_PLUS = {"epochs": 200, "milestones": [150], "weight_decay": 5e-4, **_stats("cifar+")}

RECIPES = {
    "cac-release": {
        "*": {},
        "digits": _MNIST,  # not in the release: MNIST's (grey digits)
        "mnist": _MNIST,
        "fashion-mnist": _MNIST,  # not in the release: MNIST's (28-px grey)
        "svhn": {"epochs": 75, "milestones": [50], "weight_decay": 5e-6, "fit_flip": False, **_stats("svhn")},
        "cifar10": {"epochs": 200, "milestones": [150], "weight_decay": 5e-6, **_stats("cifar10")},
        "cifar+10": _CIFAR_PLUS,
        "cifar+50": {**_CIFAR_PLUS, "batch_size": 32},
        "tiny_imagenet": {"epochs": 800, "milestones": [500], "weight_decay": 1e-3, "dropout": 0.3,
                          **_stats("tiny_imagenet")},
    },
}

#: Datasets whose recipe is another dataset's (README "Datasets the release has not").
BORROWED = {"digits": "mnist", "fashion-mnist": "mnist"}
#: Keys of the release's shipped weight files that its network does not have (``covars``, ``invcovars``).
LEGACY_KEYS = ("covars", "invcovars")
#: Input sizes the release's network accepts (N 19-25).
RELEASE_SIZES = (32, 64)


def cac_loss(distances: torch.Tensor, labels: torch.Tensor, lbda: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, anchor, tuplet) of train_cacOpenset.py 85-98: lbda * mean d_y + mean log(1 + sum_{j!=y} exp(d_y - d_j)).

    The j = y term is masked to 0 instead of gathering a host-built index list (graph-safe; one_hot
    would check the labels on the host).
    """
    true = distances.gather(1, labels.view(-1, 1))
    others = torch.zeros_like(distances, dtype=torch.bool).scatter_(1, labels.view(-1, 1), True)  # the j = y cells
    tuplet = torch.exp(true - distances).masked_fill(others, 0.0)
    tuplet = torch.log(1 + tuplet.sum(1)).mean()
    anchor = true.mean()
    return lbda * anchor + tuplet, anchor, tuplet


def cac_scores(distances: torch.Tensor) -> torch.Tensor:
    """(N, K) d * (1 - softmin(d)) (utils.py 167-170): low = known."""
    return distances * (1 - torch.softmax(-distances, dim=1))


class CAC(Method):
    phases = ("train",)
    graph_safe = True  # pure tensor step: the j != y mask is a one_hot, the loss never leaves the device

    def setup(self, ctx: Context) -> None:
        self.cfg = cfg = ctx.config
        _, h, w = ctx.image_shape
        if h != w:
            raise ValueError(f"cac needs square images (the release's Resize(size)), got {h}x{w}")
        if len(cfg["input_mean"]) != cfg["channels"] or len(cfg["input_std"]) != cfg["channels"]:
            raise ValueError(f"input_mean and input_std need one value per input channel (channels={cfg['channels']}), "
                             f"got {len(cfg['input_mean'])} and {len(cfg['input_std'])}: set them too, e.g. "
                             f"--set input_mean=[{','.join(['0.5'] * cfg['channels'])}] "
                             f"--set input_std=[{','.join(['0.25'] * cfg['channels'])}]")
        self.num_classes = ctx.num_classes
        self.image_size = h
        self.dataset = ctx.dataset
        self.backbone = cfg.get("backbone", "release")  # .get: configs of runs from before the option
        if self.backbone == "release":
            if cfg.get("backbone_weights"):
                raise layouts.LayoutError("backbone_weights is for backbone resnet50 or vit_b16; the CAC release's "
                                          "encoder trains from scratch (evaluate its files with --layout cac-release)")
            net = OpenSetClassifier(ctx.num_classes, cfg["channels"], h, cfg["dropout"], cfg["alpha"])
        else:
            encoder, dim = make_backbone(self.backbone, image_size=h)
            net = BackboneOpenSetClassifier(encoder, dim, ctx.num_classes, cfg["alpha"])
            if cfg.get("backbone_weights"):
                net.weights_info = load_weights(self.backbone, encoder, cfg["backbone_weights"], h)
        self.net = ctx.place(net)
        self.mean = torch.tensor(cfg["input_mean"], device=ctx.device).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg["input_std"], device=ctx.device).view(1, -1, 1, 1)
        self.opt = make_optimizer(self.net.parameters(), cfg)
        self.epoch = 0
        self.fitted = False
        # The test anchors (fit stage); the network's own stay alpha * e_k, so training resumed from a
        # fitted checkpoint trains against the release's anchors (its checkpoints are saved unfitted).
        self.test_anchors = self.net.anchors.detach().clone()
        self.empty_classes: list[int] = []
        set_lr(self.opt, lr_at(0, cfg))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, : self.cfg["channels"]]  # grey images arrive replicated to 3 channels
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        zero_grad_in_place(self.opt)
        _, d = self.net(self._input(images))
        loss, anchor, tuplet = cac_loss(d, labels, self.cfg["lbda"])
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "anchor": anchor.detach(), "tuplet": tuplet.detach()}

    def end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        self.fitted = False  # the network moved on: a fit stage must run again
        if self.cfg["reset_momentum"] and self.cfg["schedule"] == "multistep" and self.epoch in self.cfg["milestones"]:
            self.reset_momentum()
        set_lr(self.opt, lr_at(self.epoch, self.cfg))

    def reset_momentum(self) -> None:
        """The release's second stage starts a new SGD: zeroed buffers make the next step buf = grad."""
        for state in self.opt.state.values():
            for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                if torch.is_tensor(state.get(key)):
                    state[key].zero_()
            if torch.is_tensor(state.get("step")):  # Adam: a new optimiser counts from 0 again
                state["step"].zero_()

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """New anchors: the mean logit of each class's correctly classified training images (and of
        their mirror images with fit_flip) (eval_cacOpenset.py 58-59, utils.py 103-123)."""
        self.net.eval()
        sums = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
        counts = torch.zeros(self.num_classes, dtype=torch.float64)
        for x, y in batches:
            views = [x, x.flip(3)] if self.cfg["fit_flip"] else [x]
            for v in views:
                z, _ = self.net(self._input(v))
                z, y_cpu = z.float().double().cpu(), y.cpu()  # numpy's float64 mean of float32 logits
                keep = (z.argmax(1) == y_cpu).double()
                sums.index_add_(0, y_cpu, z * keep[:, None])
                counts.index_add_(0, y_cpu, keep)
        means = (sums / counts.clamp(min=1)[:, None]).float()  # torch.Tensor(anchor_means): float32, .double() (N 64)
        empty = counts == 0
        # No correct image: the release's np.mean of nothing is a NaN anchor (NaN scores); keep the training anchor.
        self.empty_classes = [int(k) for k in torch.nonzero(empty).flatten()]
        anchors = torch.where(empty[:, None], self.net.anchors.cpu(), means.double())
        self.test_anchors = anchors.to(self.net.anchors.device)
        self.fitted = True

    def _distances(self, images: torch.Tensor) -> torch.Tensor:
        """Float64 distances of the logits to the test anchors (the training ones before a fit)."""
        return self.net.distances(self.net(self._input(images))[0], self._test_anchors())

    def _test_anchors(self) -> torch.Tensor:
        return self.test_anchors if self.fitted else self.net.anchors

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        d = self._distances(images)
        score = -cac_scores(d).min(1).values
        return Prediction(logits=-d, score=score, scores={"cac": score, "distance": -d.min(1).values})

    def features(self, images: torch.Tensor) -> Features:
        self.net.eval()
        f = self.net.flat(self._input(images))
        return Features(penultimate=f, logits=self.head(f))

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return -self.net.distances(self.net.classify(penultimate), self._test_anchors())

    external_layouts = ("cac-release",)

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The release's ``{'net': openSetClassifier.state_dict(), 'acc', 'epoch'}`` file (README);
        its anchors are ``anchors`` or, in the files it ships, ``means`` (eval_cacOpenset.py 52-53)."""
        if self.backbone != "release":
            raise layouts.LayoutError(f"--layout {layout} holds the CAC release's encoder; this run's backbone is "
                                      f"{self.backbone} (drop --set backbone)")
        names = {k[len("net."):]: k for k in weights if k.startswith("net.")}
        if not names:
            raise layouts.LayoutError("a cac-release file holds the network under 'net' "
                                      "(torch.save({'net': net.state_dict(), 'acc': ..., 'epoch': ...})); "
                                      "this one has no 'net.*' key")
        if "means" in names and "anchors" not in names:
            names["anchors"] = names.pop("means")
        old = [names.pop(k) for k in LEGACY_KEYS if k in names]
        layouts.drop(weights, old, "class Gaussians of the code that wrote the shipped files; eval_cacOpenset.py 51 "
                                   "loads only the network's keys")
        loaded = {name: weights[key] for name, key in names.items()}
        layouts.check_strict(loaded, self.net.state_dict(), "the CAC release network (openSetClassifier)")
        for name, value in loaded.items():  # encoder.encoderM.I.* are the modules encoder.convN / bnN once more
            if name.startswith("encoder.encoder") and not torch.equal(value, own_alias(loaded, name)):
                raise layouts.LayoutError(f"{names[name]} differs from the module it aliases in the release "
                                          "network: not a file the release saved")
        layouts.load_module(self.net, loaded, "the CAC release network (openSetClassifier)")
        self.fitted, self.empty_classes = False, []  # the fit stage replaces the anchors (eval_cacOpenset.py 58-59)

    def f1_rule(self) -> None:
        return None  # the release reports accuracy and AUROC only

    def adaptations(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data": "the host's stream (shared augmentation, all training images) instead of the release's "
                    "RandomResizedCrop/flip/rotation and its Train/Val split",
            "model_selection": "last epoch (the release keeps the lowest validation anchor loss)",
            "normalisation": "mean of the release's five per-trial statistics, applied by the method",
        }
        if self.backbone != "release":
            out["backbone"] = (f"{self.backbone} under the anchored layer (classify initialised alone with the release's "
                               "Linear init)" + ("; grey images replicated to 3 channels" if self.cfg["channels"] == 1
                                                 else ""))
            if self.net.weights_info is not None:
                out["backbone_weights"] = dict(self.net.weights_info)
        elif self.image_size not in RELEASE_SIZES:
            out["image_size"] = f"{self.image_size} px: Linear(128*ceil(H/8)^2) (the release has 32 and 64 px only)"
        if self.dataset in BORROWED:
            out["recipe"] = f"{self.dataset} is not in the release: {BORROWED[self.dataset]}'s recipe and statistics"
        if self.empty_classes:
            out["cac_training_anchors_kept"] = self.empty_classes  # classes with no correct training image
        if not self.fitted:
            out["cac_fitted"] = False  # predict used the training anchors alpha * e_k
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch, "fitted": self.fitted,
                "test_anchors": self.test_anchors, "empty_classes": list(self.empty_classes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = state["epoch"]
        self.fitted = bool(state.get("fitted", False))
        self.test_anchors = state["test_anchors"].to(self.net.anchors.device)
        self.empty_classes = [int(k) for k in state.get("empty_classes", [])]
        set_lr(self.opt, lr_at(self.epoch, self.cfg))


def own_alias(loaded: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """The tensor ``encoder.encoderM.I.<p>`` aliases: Sequential position I of block M is conv, BN or
    LeakyReLU of layer 3(M-1) + I//3 + 1 (dropout last, parameter-free)."""
    _, block, index, param = name.split(".", 3)
    m, i = int(block[len("encoder"):]), int(index)
    layer = 3 * (m - 1) + i // 3 + 1
    kind = ("conv", "bn")[i % 3]
    return loaded[f"encoder.{kind}{layer}.{param}"]


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(
        MethodSpec(
            name="cac",
            factory=CAC,
            defaults=DEFAULTS,
            recipes=RECIPES,
            default_recipe="cac-release",
            description="CAC: anchored logit space, CAC loss (tuplet + lambda * anchor); score -min d*(1-softmin d)",
            citation="Miller, Suenderhauf, Milford, Dayoub, Class Anchor Clustering, WACV 2021",
            options=OPTIONS,
        )
    )
