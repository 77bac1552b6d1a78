"""Feature extractors a method's head sits on: ``classifier32``, ResNet-50 and ViT-B/16 (``backbone``).

A method with a ``backbone`` option builds its network with :func:`make_network`:

- ``classifier32``: :class:`~osrbench.models.Classifier32`, built exactly as before (its ``fc`` is
  drawn between its convs and its init, so it is never split into extractor and head: every
  pinned float64 step stays bit-identical).
- ``resnet50``: torchvision's ``resnet50`` with ``fc`` replaced by ``nn.Identity`` (the pooled
  2048-d feature), the backbone the MLS release fine-tunes on the SSB (``timm.create_model
  ('resnet50')``, whose keys equal torchvision's), followed by the method's head. At random init
  each bottleneck's last BN weight is 0 (torchvision's ``zero_init_residual``, timm's default
  ``zero_init_last``).
- ``vit_b16``: torchvision's ``vit_b_16`` at the run's image size (a multiple of 16) with
  ``heads`` replaced by ``nn.Identity`` (the 768-d class token after the last LayerNorm).

:class:`BackboneNet` gives ResNet-50 and ViT the interface the methods call on ``Classifier32``
(``pooled(x, bn)``, ``head(f)``, ``forward(x, bn)``, ``feat_dim``, ``fc``), with one BN branch
(``bn`` must be 0: only classifier32 has the two-branch variant ARPL+CS trains). Grey images
(one channel) are replicated to three before the extractor (an adaptation, recorded).

Weights (``--set backbone_weights=PATH``): a local file, never a download, read with
``torch.load(weights_only=True)`` by :func:`load_weights` in one of these formats:

- torchvision or timm ``resnet50`` (the same keys), ``vit_b_16`` (torchvision's keys) or timm's
  ``vit_base_patch16_*`` (its keys mapped by :func:`timm_vit_to_torchvision`);
- the MLS release's MoCo-Places checkpoint as ``models/model_utils.py`` reads it
  (``places_moco``: ``torch.load(path)`` itself is the state dict, ``module.`` stripped where a
  key has it, the MoCo projection head ``fc.0`` / ``fc.2`` dropped: the release replaces
  ``fc.0`` by a random K-way ``fc`` and skips ``fc.2``), and the official MoCo v2 file
  (``{"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "queue", ...}}``: the query
  encoder is read, the rest dropped; the release's own ``imagenet_moco`` branch strips
  ``module.`` before it filters on ``module.encoder_q.`` and so keeps no key at all);
- a file wrapped in ``{"state_dict": ...}`` or ``{"model": ...}``.

Classifier heads (``fc.*``, ``head.*``, ``heads.*``) are dropped and reported (the run's head has
its own K). Every other key must fit the extractor exactly (:func:`osrbench.layouts.check_strict`,
one line). ViT weights of another image size get their position embeddings resized as
torchvision does (``interpolate_embeddings``: the 14×14 patch grid of a 224-px file resized
bicubically, ``align_corners=True``, to the run's grid; the class token's embedding kept); timm's
own ``resample_abs_pos_embed`` uses ``align_corners=False`` with antialiasing, so a timm model
loaded at another size differs slightly.

:func:`pin_weights_file` hashes the file when a run is planned: its name and sha256 enter the
config (``backbone_weights_file``), hence the config hash, the run folder and the record, so two
runs with different weights never share a record.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from osrbench.errors import UserError
from osrbench.layouts import LayoutError, check_strict, flatten, read_file, shown
from osrbench.method import Option
from osrbench.results import file_sha256

__all__ = [
    "BACKBONES",
    "PRETRAINED",
    "FEATURE_DIMS",
    "WEIGHTS_KEY",
    "WEIGHTS_FILE_KEY",
    "BACKBONE_DEFAULTS",
    "BACKBONE_OPTIONS",
    "BackboneError",
    "BackboneNet",
    "check_backbone",
    "make_backbone",
    "make_network",
    "load_weights",
    "load_classifier",
    "timm_vit_to_torchvision",
    "network_adaptations",
    "pin_weights_file",
    "sha256_of",
]

#: The ``backbone`` choices and the width of the feature each gives the head.
BACKBONES = ("classifier32", "resnet50", "vit_b16")
#: The backbones a weights file is for.
PRETRAINED = ("resnet50", "vit_b16")
FEATURE_DIMS = {"classifier32": 128, "resnet50": 2048, "vit_b16": 768}
#: The config key of the weights file (a path; ``""`` = random init) and the one the plan adds.
WEIGHTS_KEY = "backbone_weights"
WEIGHTS_FILE_KEY = "backbone_weights_file"
#: ViT-B/16's patch size: the run's image size must be a multiple of it.
VIT_PATCH = 16

_MOCO_QUERY = "encoder_q."
_DATA_PARALLEL = "module."


class BackboneError(UserError, ValueError):
    """A backbone name or image size the backbones cannot take (one line)."""


class BackboneNet(nn.Module):
    """A feature extractor and a Linear head, with ``Classifier32``'s entry points.

    :param backbone: the ``backbone`` name (``resnet50`` or ``vit_b16``).
    :param features: the extractor: images (B, 3, H, W) -> pooled features (B, feat_dim).
    :param feat_dim: the feature width.
    :param num_classes: K, the head's outputs.
    :param head_bias: the head's bias (the MLS release's timm ``resnet50`` head has one).
    """

    bn_branches = 1

    def __init__(self, backbone: str, features: nn.Module, feat_dim: int, num_classes: int,
                 head_bias: bool = True) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.features_net = features
        self.feat_dim = feat_dim
        self.num_classes = num_classes
        self.fc = nn.Linear(feat_dim, num_classes, bias=head_bias)
        #: What :func:`load_weights` read (``None``: random init); methods record it.
        self.weights_info: dict[str, Any] | None = None

    def _check_bn(self, bn: int) -> None:
        if bn != 0:
            raise ValueError(f"{self.backbone_name} has one BN branch (bn 0); branch {bn} needs backbone=classifier32")

    def pooled(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Pooled feature (B, feat_dim) of a batch of images (grey images replicated to three channels)."""
        self._check_bn(bn)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features_net(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Only the final Linear: pooled feature -> logits."""
        return self.fc(f)

    def forward(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        return self.head(self.pooled(x, bn))

    #: The entry point besides ``forward`` that the methods call (``compile`` compiles it too).
    ENTRY_POINTS = ("pooled",)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``nn.Module.compile`` (the forward) and each of :attr:`ENTRY_POINTS`, in place (as ``Classifier32``)."""
        super().compile(*args, **kwargs)
        for name in self.ENTRY_POINTS:
            setattr(self, name, torch.compile(getattr(type(self), name).__get__(self), *args, **kwargs))

    def adaptations(self, in_channels: int) -> dict[str, Any]:
        """What the record should say about this network."""
        out: dict[str, Any] = {}
        if in_channels == 1:
            out["backbone_input"] = f"grey images replicated to 3 channels for {self.backbone_name}"
        if self.weights_info is not None:
            out["backbone_weights"] = dict(self.weights_info)
        return out


def check_backbone(name: str, image_size: int | None = None) -> None:
    """A :class:`BackboneError` (one line) for an unknown name or an image size ViT cannot take."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r} (valid: {', '.join(BACKBONES)})")
    if name == "vit_b16" and isinstance(image_size, int) and image_size % VIT_PATCH:
        raise BackboneError(f"backbone vit_b16 needs an image size that is a multiple of {VIT_PATCH} "
                         f"(its 16-px patches), got {image_size}: set --set image_size=32 (or 224, 448, ...)")


def make_backbone(name: str, weights_path: str | Path = "", *, image_size: int = 224,
                  in_channels: int = 3) -> tuple[nn.Module, int]:
    """``(extractor, feature_dim)``: images -> pooled features, at random init or from ``weights_path``.

    ``classifier32``'s extractor is a whole :class:`~osrbench.models.Classifier32` (K = 1) whose
    :meth:`~osrbench.models.Classifier32.pooled` is the extractor's forward; methods build it with
    :func:`make_network` instead, which keeps its K-way ``fc`` in its place. Weights files are for
    ``resnet50`` and ``vit_b16``.
    """
    check_backbone(name, image_size)
    import torchvision  # here: importing torchvision.models costs every command a second

    if name == "classifier32":
        if weights_path:
            raise BackboneError("backbone_weights is for resnet50 and vit_b16; classifier32 trains from scratch "
                             "(evaluate its release files with osrbench evaluate --layout)")
        from osrbench.models.classifier32 import Classifier32

        return _Pooled(Classifier32(1, in_channels=in_channels)), FEATURE_DIMS[name]
    if name == "resnet50":
        # zero_init_residual: each bottleneck's last BN weight starts at 0, as timm's resnet50 (zero_init_last,
        # the MLS release's timm.create_model) inits it; a random-init network is then the identity through its
        # residual branches, whose activations otherwise grow through the 16 blocks (eval mode overflows).
        net = torchvision.models.resnet50(weights=None, zero_init_residual=True)
        net.fc = nn.Identity()
    else:
        net = torchvision.models.vit_b_16(weights=None, image_size=image_size)
        net.heads = nn.Identity()
    return net, FEATURE_DIMS[name]


class _Pooled(nn.Module):
    """``classifier32`` as an extractor (forward = ``pooled``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(x)


def make_network(backbone: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                 weights: str | Path = "", bn_branches: int = 1, head_bias: bool = True) -> nn.Module:
    """The network a method trains: ``classifier32`` exactly as before, or :class:`BackboneNet`.

    Order of the random draws: the extractor's init, then the head's; the weights file (if any)
    is loaded last and draws nothing.
    """
    check_backbone(backbone, image_size)
    if backbone == "classifier32":
        if weights:
            raise BackboneError("backbone_weights is for resnet50 and vit_b16; classifier32 trains from scratch")
        from osrbench.models.classifier32 import Classifier32

        return Classifier32(num_classes, in_channels=in_channels, bn_branches=bn_branches)
    if bn_branches != 1:
        raise BackboneError(f"backbone {backbone} has one BN branch; {bn_branches} branches need backbone=classifier32")
    features, dim = make_backbone(backbone, image_size=image_size, in_channels=in_channels)
    net = BackboneNet(backbone, features, dim, num_classes, head_bias)
    if weights:
        net.weights_info = load_weights(backbone, features, weights, image_size)
    return net


# ------------------------------------------------------------------------------------ weights files

#: timm ViT names -> torchvision ``VisionTransformer`` names (blocks: ``{i}`` is the block index).
_TIMM_VIT = {
    "cls_token": "class_token",
    "pos_embed": "encoder.pos_embedding",
    "patch_embed.proj.weight": "conv_proj.weight",
    "patch_embed.proj.bias": "conv_proj.bias",
    "norm.weight": "encoder.ln.weight",
    "norm.bias": "encoder.ln.bias",
}
_TIMM_VIT_BLOCK = {
    "norm1": "ln_1",
    "attn.qkv.weight": "self_attention.in_proj_weight",  # rows q, k, v in both
    "attn.qkv.bias": "self_attention.in_proj_bias",
    "attn.proj": "self_attention.out_proj",
    "norm2": "ln_2",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.3",
}
_TIMM_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def timm_vit_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``vit_base_patch16_*`` state dict in torchvision ``vit_b_16`` names (values unchanged).

    Keys it does not know keep their names, so the strict check names them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TIMM_VIT:
            out[_TIMM_VIT[key]] = value
            continue
        m = _TIMM_BLOCK_KEY.match(key)
        if m:
            rest = m[2]
            for timm_name, tv_name in _TIMM_VIT_BLOCK.items():
                if rest == timm_name or rest.startswith(timm_name + "."):
                    out[f"encoder.layers.encoder_layer_{m[1]}.{tv_name}{rest[len(timm_name):]}"] = value
                    break
            else:
                out[key] = value
            continue
        out[key] = value
    return out


def _unwrap(obj: Any, what: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors (under a ``state_dict`` / ``model`` entry when it has one) and notes."""
    notes = []
    if isinstance(obj, Mapping):
        for box in ("state_dict", "model"):
            if isinstance(obj.get(box), Mapping):
                obj = obj[box]
                notes.append(f"read the file's {box!r} entry")
                break
    tensors, _ = flatten(obj, what)
    if not tensors:
        raise LayoutError(f"{what}: holds no tensors")
    return tensors, notes


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``prefix`` removed from the keys that start with it (the release's ``strip_state_dict``)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _interpolate_pos_embedding(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                               image_size: int, what: str) -> str | None:
    key = "encoder.pos_embedding"
    if key not in state or key not in expected or state[key].shape == expected[key].shape:
        return None
    have, want = state[key].shape, expected[key].shape
    n_have = have[1] - 1
    side = int(round(n_have ** 0.5))
    if len(have) != 3 or have[2] != want[2] or side * side != n_have:
        raise LayoutError(f"{what}: position embedding of shape {list(have)} cannot be resized to {list(want)}")
    from torchvision.models.vision_transformer import interpolate_embeddings

    resized = interpolate_embeddings(image_size, VIT_PATCH, {key: state[key]})
    state[key] = resized[key]
    return (f"position embedding resized from a {side}x{side} to a {image_size // VIT_PATCH}x"
            f"{image_size // VIT_PATCH} patch grid (torchvision interpolate_embeddings: bicubic, "
            "align_corners=True; class token kept)")


def load_weights(name: str, extractor: nn.Module, path: str | Path, image_size: int = 224) -> dict[str, Any]:
    """Load a weights file into ``extractor`` (from :func:`make_backbone`) strictly; what it read.

    Returns ``{"format", "dropped": {pattern: why}, "notes": [...]}``; a file that is missing,
    unreadable or does not fit is a :class:`~osrbench.layouts.LayoutError` (one line).
    """
    path = Path(path)
    what = f"backbone_weights {path}"
    state, notes = _unwrap(read_file(path, what), what)
    dropped: dict[str, str] = {}
    fmt = "torchvision"
    if any(k.startswith(_MOCO_QUERY) or k.startswith(_DATA_PARALLEL + _MOCO_QUERY) for k in state):
        fmt = "moco"  # MoCo v2's own file: the query encoder is the network
        state = _strip(state, _DATA_PARALLEL)
        others = [k for k in state if not k.startswith(_MOCO_QUERY)]
        if others:
            dropped["not encoder_q.* (" + shown(others) + ")"] = "MoCo's key encoder and queue, not the network"
        state = {k[len(_MOCO_QUERY):]: v for k, v in state.items() if k.startswith(_MOCO_QUERY)}
    else:
        state = _strip(state, _DATA_PARALLEL)
    if name == "vit_b16" and "patch_embed.proj.weight" in state:
        fmt = "timm"
        state = timm_vit_to_torchvision(state)
    head_prefixes = {"resnet50": ("fc.",), "vit_b16": ("heads.", "head.")}[name]
    if name == "resnet50" and any(k.startswith(("fc.0.", "fc.2.")) for k in state):
        fmt = "moco"  # the release's places_moco: the MoCo MLP head fc.0 / fc.2
        dropped["fc.*"] = "MoCo projection head (fc.0, fc.2): the release drops fc.2 and replaces fc.0 by its K-way head"
    for prefix in head_prefixes:
        keys = [k for k in state if k.startswith(prefix)]
        if keys:
            dropped.setdefault(prefix + "*", "classifier head: the run's own head replaces it")
            for k in keys:
                del state[k]
    expected = extractor.state_dict()
    resized = _interpolate_pos_embedding(state, expected, image_size, what) if name == "vit_b16" else None
    if resized:
        notes.append(resized)
    check_strict(state, expected, f"{what} ({fmt} format, backbone {name})")
    extractor.load_state_dict(state, strict=True)
    return {"format": fmt, "dropped": dropped, "notes": notes}


#: The ImageNet classifier head of each pretrained backbone in a whole-classifier file: torchvision's
#: names, and timm's ViT name (timm's ``resnet50`` head is ``fc``, as torchvision's).
CLASSIFIER_HEADS = {"resnet50": ("fc.",), "vit_b16": ("heads.head.", "head.")}


def load_classifier(net: BackboneNet, weights: Mapping[str, torch.Tensor], what: str = "--weights") -> dict[str, Any]:
    """A whole ImageNet classifier's state dict, head included (``evaluate --layout torchvision``), into
    ``net``: the extractor strictly as :func:`load_weights` reads it, the head into ``net.fc``.

    The file's head rows are its classes in its own order: for torchvision's and timm's ImageNet-1K
    classifiers, the sorted wnids (``ImageFolder``'s order of the ImageNet train folders), which is
    the order of imagenet-ssb's known labels. A ``state_dict`` / ``model`` entry is read where the file
    wraps the network in one; ``module.`` is stripped; timm ViT keys are mapped
    (:func:`timm_vit_to_torchvision`); a ViT of another image size gets its position embedding
    resized. Returns what it read (``format``, ``notes``) and keeps it in ``net.weights_info``.
    """
    from osrbench.layouts import plain_state

    name = net.backbone_name
    box = next((b for b in ("state_dict.", "model.") if any(k.startswith(b) for k in weights)), "")
    state = plain_state(weights, box)  # reads every tensor of the network: the file (or its box) is the network
    notes = [f"read the file's {box[:-1]!r} entry"] if box else []
    fmt = "torchvision"
    if name == "vit_b16" and "patch_embed.proj.weight" in state:
        fmt = "timm"
        state = timm_vit_to_torchvision(state)
    prefix = next((p for p in CLASSIFIER_HEADS[name] if f"{p}weight" in state), None)
    if prefix is None:
        heads = " or ".join(f"{p}weight" for p in CLASSIFIER_HEADS[name])
        raise LayoutError(f"{what}: no classifier head ({heads}) in the file; a {name} file without its head goes "
                          f"in --set backbone_weights=FILE (the run's head is then trained)")
    head = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    rows = head["weight"].shape[0] if head["weight"].dim() == 2 else None
    if rows != net.num_classes:
        raise LayoutError(f"{what}: the file's classifier head ({prefix}weight {list(head['weight'].shape)}) has "
                          f"{rows} classes; this split has {net.num_classes} known classes (an ImageNet-1K "
                          "classifier is evaluated on imagenet-ssb, whose 1000 known classes are its classes)")
    features = net.features_net
    expected = features.state_dict()
    if name == "vit_b16":
        side = int(round((expected["encoder.pos_embedding"].shape[1] - 1) ** 0.5))
        resized = _interpolate_pos_embedding(state, expected, side * VIT_PATCH, what)
        if resized:
            notes.append(resized)
    check_strict(state, expected, f"{what} ({fmt} format, backbone {name})")
    check_strict(head, net.fc.state_dict(), f"{what}: its classifier head {prefix}*")
    features.load_state_dict(state, strict=True)
    net.fc.load_state_dict(head, strict=True)
    net.weights_info = {"format": fmt, "dropped": {}, "notes": notes,
                        "head": f"the file's {rows}-way head {prefix}* (class i = the file's class i)"}
    return dict(net.weights_info)


# ------------------------------------------------------------------------------------ the record


def sha256_of(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise LayoutError(f"backbone_weights {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None


def pin_weights_file(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` checked and with its weights file pinned, when a run is planned (before any data is read).

    Checked: a ``backbone`` of :data:`BACKBONES` fits the image size (ViT: a multiple of 16), and
    ``backbone_weights`` names a readable file and goes with a pretrained backbone (resnet50,
    vit_b16; not classifier32 or a method's own network). Pinned: the path made absolute and
    ``backbone_weights_file`` = ``{"name", "sha256"}`` (what ``osrbench evaluate`` records of its
    ``--weights``), so the file's content enters the config hash. A config without these keys is
    returned as it is; every problem is one line.
    """
    backbone, value = cfg.get("backbone"), cfg.get(WEIGHTS_KEY)
    if backbone in BACKBONES:
        check_backbone(backbone, cfg.get("image_size"))
    if not value:
        return dict(cfg)
    if backbone is not None and backbone not in PRETRAINED:
        raise BackboneError(f"backbone_weights is for backbone {' or '.join(PRETRAINED)}; this run's backbone "
                            f"{backbone} trains from scratch (add --set backbone=resnet50 or vit_b16)")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise LayoutError(f"backbone_weights {value}: no such file (a local torchvision, timm or MoCo weights file; "
                          "nothing is downloaded)")
    if not path.is_file():
        raise LayoutError(f"backbone_weights {value}: not a file")
    path = path.resolve()
    return {**cfg, WEIGHTS_KEY: str(path), WEIGHTS_FILE_KEY: {"name": path.name, "sha256": sha256_of(path)}}


# ------------------------------------------------------------------------------------ method options

#: The config keys of a method whose head sits on a backbone (merged into its DEFAULTS).
BACKBONE_DEFAULTS: dict[str, Any] = {WEIGHTS_KEY: "", "backbone": "classifier32"}
BACKBONE_OPTIONS: dict[str, Option] = {
    "backbone": Option(choices=BACKBONES, help="feature extractor under the head: classifier32 (the releases', from "
                                               "scratch), resnet50 (2048-d) or vit_b16 (768-d, image size a multiple of 16)"),
    WEIGHTS_KEY: Option(help="local weights file of the resnet50 / vit_b16 backbone (torchvision, timm or MoCo format; "
                             "'' = random init; its sha256 enters the config hash)"),
}


def network_adaptations(net: nn.Module, in_channels: int) -> dict[str, Any]:
    """The record's notes on a network from :func:`make_network` (none for classifier32)."""
    return net.adaptations(in_channels) if isinstance(net, BackboneNet) else {}
