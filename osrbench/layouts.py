"""Weights trained elsewhere: the releases' file layouts, mapped strictly onto the host's networks.

``osrbench evaluate --layout LAYOUT --weights FILE`` reads files in one of :data:`LAYOUTS`:

- ``arpl-release`` (``iCGY96/ARPL``). ``osr.py`` saves through ``utils.save_networks`` the network's
  ``state_dict()`` as ``log/models/<dataset>/checkpoints/<model>_<loss>_<item>_<cs>_.pth`` and the
  criterion's beside it as ``..._criterion.pth``. On a GPU the network is wrapped in
  ``nn.DataParallel``, so its keys start with ``module.``; the criterion is not wrapped.
  ``classifier32`` (``models/models.py``) has plain ``nn.BatchNorm2d`` layers (``bnN.weight``, ...);
  ``classifier32ABN`` (``--cs``) has ``MultiBatchNorm`` layers, an ``nn.ModuleList`` ``bns`` of two
  (``bnN.bns.K.weight``, ...). Both declare a tenth BN, ``bn10``, that ``forward`` never uses, and
  ``fc = Linear(128, K, bias=False)``. The ``ARPLoss`` criterion (``loss/ARPLoss.py``) holds
  ``points`` (K×128) and ``radius`` (shape (1,)), and ``points`` once more as ``Dist.centers``
  (``self.points = self.Dist.centers``: one parameter under two names); the ``Softmax`` criterion
  (``loss/Softmax.py``) has no parameters, so its file is an empty dict. ``--cs`` does not save
  its GAN.
- ``dias-release`` (``wjun0830/Difficulty-Aware-Simulator``). ``osr.py``'s ``save_checkpoint`` writes
  every 25 epochs one dict, ``runs/<F1|AUROC>/<dataset>/<item>_<epoch>_<batch>_checkpoint.pth.tar``:
  ``epoch`` (0-based), ``net1_state_dict`` (the Copycat), ``net2_state_dict`` (the classifier, the
  network it evaluates), ``netD_state_dict``, ``netG_state_dict`` and the optimiser states
  ``optimizer1``, ``optimizer2``, ``optimizerD``, ``optimizerG``. Every network is in
  ``nn.DataParallel``; both classifiers are ``classifier32ABN`` with ``bn10``. Its criterion is
  ``nn.CrossEntropyLoss`` (nothing to save). A bare ``classifier32ABN`` state dict (the
  classifier alone) is read too.
- ``cac-release`` (``dimitymiller/cac-openset``): ``train_cacOpenset.py`` saves
  ``{'net': openSetClassifier.state_dict(), 'acc', 'epoch'}``; the plugin ``osrbench-cac`` reads it
  (its README).
- ``medaf-release`` (``Vanixxz/MEDAF``): ``osr_main.py`` saves ``{'epoch', 'state_dict':
  MultiBranchNet.state_dict(), 'optimizer', 'scheduler'}``; the plugin ``osrbench-medaf`` reads it.
- ``mls-release`` (``sgvaze/osr_closed_set_all_you_need``): the MLS baseline's checkpoints it ships,
  ``pretrained_weights/tinyimagenet_<i>.pth`` (softmax-trained VGG32 = the release's ``classifier32``
  with ``feat_dim`` 128, Tiny-ImageNet at 64 px). Each is the ``nn.DataParallel`` network's
  ``state_dict()`` alone: ``module.conv1..9.weight``, plain ``module.bn1..bn10.*`` (``bn10`` unused
  by ``forward``), ``module.fc.weight`` (K×128, no bias); no criterion, no epoch. File ``i`` is split
  ``i`` of the ``osrci`` protocol (the release's ``osr_splits['tinyimagenet'][i]``, in the same row
  order); its README evaluates them with CIFAR normalisation at 64 px (softmax's ``mls-paper``
  recipe: ``--recipe mls-paper --protocol osrci``). Read by ``softmax`` (and ``openmax``).
- ``torchvision``: a pretrained ImageNet classifier's whole ``state_dict()`` with its 1000-way head:
  torchvision's ``resnet50`` / ``vit_b_16`` or timm's ``resnet50`` (the same keys) /
  ``vit_base_patch16_*`` (mapped), evaluated without training as the MLS release's
  ``methods/tests/openset_test_imagenet.py`` does; read by ``softmax`` with ``backbone`` resnet50 or
  vit_b16 (:func:`osrbench.models.backbones.load_classifier`: the head is the method's Linear head).
- ``osrbench``: this host's ``checkpoint.pt``, or a ``Method.state_dict()`` saved with
  ``torch.save``; :mod:`osrbench.external` loads it with ``load_state_dict`` for every method.

Both releases number their trials in reverse order: item ``i`` of a five-row protocol is split
``4 - i`` here (ARPL: protocol ``osrci``; DIAS: ``auroc`` or ``f1``, after the folder's name).

The host's :class:`~osrbench.models.Classifier32` stores a single BN as ``bnN.bns.0.*`` and has no
``bn10``: :func:`classifier32_state` maps a release state dict onto it, :func:`load_module` loads
it strictly (:func:`check_strict` names every missing, unexpected and misshapen key in one line).
Files are read with ``torch.load(weights_only=True)`` (:func:`read_file`): a crafted file cannot
run code. :class:`ExternalWeights` is what a method's ``load_external`` receives: the files'
tensors under their own names, and which of them the load read or dropped (:func:`drop`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from osrbench.errors import UserError

#: The layouts ``osrbench evaluate --layout`` takes.
LAYOUTS = ("dias-release", "arpl-release", "mls-release", "cac-release", "medaf-release", "torchvision", "osrbench")
#: The host's own layout (any method; :mod:`osrbench.external` reads it).
HOST_LAYOUT = "osrbench"
#: The key prefix ``nn.DataParallel`` adds.
DATA_PARALLEL = "module."
#: Keys named per kind in an error line; the rest are counted.
SHOWN = 3

#: The ARPLoss criterion's keys, and the second name of ``points``.
CRITERION_KEYS = ("points", "radius")
CRITERION_ALIAS = "Dist.centers"

#: The DIAS checkpoint's networks: host part -> the release's key.
DIAS_NETWORKS = {"net": "net2_state_dict", "copycat": "net1_state_dict", "G": "netG_state_dict", "D": "netD_state_dict"}
DIAS_OPTIMIZERS = ("optimizer1", "optimizer2", "optimizerD", "optimizerG")

_PLAIN_BN = re.compile(r"^(bn[0-9]+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_UNUSED_BN = "bn10"


class LayoutError(UserError, ValueError):
    """Files that are not weights of the layout, or do not fit the method's networks (one line)."""


def shown(names: Sequence[str], n: int = SHOWN) -> str:
    """The first ``n`` names, then how many more: ``a, b, c (+4 more)``."""
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


# ------------------------------------------------------------------------------------ files


def read_file(path: Path, what: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a :class:`LayoutError` naming the file otherwise."""
    path = Path(path)
    what = what or f"--weights {path}"
    if not path.exists():
        raise LayoutError(f"{what}: no such file")
    if not path.is_file():
        raise LayoutError(f"{what}: not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise LayoutError(f"{what}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - whatever torch.load or safe unpickling refuses
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise LayoutError(f"{what}: not a weights file torch.load(weights_only=True) reads "
                          f"({type(exc).__name__}{': ' + first if first else ''})") from None


def flatten(obj: Any, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, others)`` of a state dict: nested mappings joined with ``.``; ``others`` holds the
    leaves that are not tensors (a checkpoint's epoch, an optimiser's hyperparameters).

    A :class:`LayoutError` unless ``obj`` is a mapping with at least one tensor (or empty: the
    ARPL release's ``Softmax`` criterion file).
    """
    if not isinstance(obj, Mapping):
        raise LayoutError(f"{what}: not a state dict (a mapping of names to tensors) but a {type(obj).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    others: dict[str, Any] = {}

    def walk(prefix: str, m: Mapping[Any, Any]) -> None:
        for key, value in m.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(name + ".", value)
            elif torch.is_tensor(value):
                tensors[name] = value
            else:
                others[name] = value

    walk("", obj)
    if others and not tensors:
        raise LayoutError(f"{what}: not a state dict of tensors (it holds {shown(list(others))} and no tensor)")
    return tensors, others


def check_finite(tensors: Mapping[str, torch.Tensor], where: Callable[[str], str]) -> None:
    """Refuse NaN or infinite weights as such (damaged or diverged), before any load compares them:
    NaN != NaN would make a check of equal tensors name another problem. ``where(key)``: its file."""
    for key, t in tensors.items():
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise LayoutError(f"--weights {where(key)}: {key!r} holds {bad:,} NaN or infinite value(s) of "
                                  f"{t.numel():,}: the weights are damaged or diverged; nothing is evaluated")


class ExternalWeights(Mapping[str, torch.Tensor]):
    """The tensors of the files given to ``osrbench evaluate``, under their names in the files.

    Reading a tensor (``weights[key]``) marks it used; :meth:`drop` marks keys a release saves but
    never uses, with the reason, for the record. The host refuses a load that leaves keys neither
    used nor dropped (:meth:`unused`). ``others`` holds the files' non-tensor leaves; ``info`` what
    a load learnt about the files (``trained_epochs``).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], origin: Mapping[str, str] | None = None,
                 others: Mapping[str, Any] | None = None) -> None:
        self._tensors = dict(tensors)
        self.origin = dict(origin or {})
        self.others = dict(others or {})
        self.used: set[str] = set()
        self.dropped: dict[str, str] = {}
        self.info: dict[str, Any] = {}

    @classmethod
    def from_files(cls, files: Sequence[tuple[str, Any]]) -> "ExternalWeights":
        """The weights of ``(name, loaded object)`` pairs; a key two files share is refused."""
        tensors: dict[str, torch.Tensor] = {}
        others: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name, obj in files:
            t, o = flatten(obj, f"--weights {name}")
            clash = [k for k in (*t, *o) if k in origin]
            if clash:
                raise LayoutError(f"--weights {name} holds key(s) that --weights {origin[clash[0]]} holds too: "
                                  f"{shown(clash)} (the same file twice?)")
            tensors.update(t)
            others.update(o)
            origin.update({k: name for k in (*t, *o)})
        return cls(tensors, origin, others)

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self._tensors[key]
        self.used.add(key)
        return value

    def __contains__(self, key: object) -> bool:  # no read: Mapping's default would mark the key used
        return key in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def peek(self) -> Mapping[str, torch.Tensor]:
        """Every tensor, without marking it used (for checks of the files themselves)."""
        return dict(self._tensors)

    def drop(self, keys: Iterable[str], why: str) -> None:
        """Mark ``keys`` (tensors or other leaves) as saved by the release but not loaded, because ``why``."""
        for key in keys:
            self.used.discard(key)
            self.dropped[key] = why

    def unused(self) -> list[str]:
        """Tensor keys the load neither read nor dropped."""
        return [k for k in self._tensors if k not in self.used and k not in self.dropped]

    def dropped_summary(self) -> dict[str, str]:
        """What was not loaded, compactly: ``{"module.bn10.*": why, ...}`` (a prefix stands for every key
        under it when all of them were dropped for the same reason); non-tensor leaves that no load
        dropped are listed as such."""
        reasons = dict(self.dropped)
        for key in self.others:
            reasons.setdefault(key, "not a tensor")
        every = [*self._tensors, *self.others]
        out: dict[str, str] = {}
        covered: set[str] = set()
        for key, why in reasons.items():
            if key in covered:
                continue
            parts = key.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                members = [k for k in every if k == prefix or k.startswith(prefix + ".")]
                if all(reasons.get(m) == why for m in members):
                    out[members[0] if len(members) == 1 else prefix + ".*"] = why
                    covered.update(members)
                    break
        return out


def drop(weights: Mapping[str, Any], keys: Iterable[str], why: str) -> None:
    """Record that ``keys`` of ``weights`` are not loaded, because ``why`` (a no-op for a plain dict)."""
    keys = list(keys)
    if isinstance(weights, ExternalWeights) and keys:
        weights.drop(keys, why)


def drop_prefix(weights: Mapping[str, Any], prefix: str, why: str) -> None:
    """:func:`drop` every key under ``prefix`` (tensors and the files' other leaves)."""
    if isinstance(weights, ExternalWeights):
        keys = [k for k in (*weights, *weights.others) if k.startswith(prefix)]
        drop(weights, keys, why)


# ------------------------------------------------------------------------------------ key maps


def strip_data_parallel(names: Iterable[str], prefix: str = "") -> dict[str, str]:
    """``{name without prefix and module.: key}`` for the keys under ``prefix``; ``module.`` (the
    ``nn.DataParallel`` wrapper) is stripped when every one of them has it."""
    keys = [k for k in names if k.startswith(prefix)]
    rel = [k[len(prefix):] for k in keys]
    wrapped = bool(rel) and all(r.startswith(DATA_PARALLEL) for r in rel)
    return {(r[len(DATA_PARALLEL):] if wrapped else r): k for r, k in zip(rel, keys)}


def plain_state(weights: Mapping[str, torch.Tensor], prefix: str = "",
                exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The state dict stored under ``prefix`` (without it and without ``module.``), as it is."""
    skip = set(exclude)
    names = strip_data_parallel((k for k in weights if k not in skip), prefix)
    return {short: weights[key] for short, key in names.items()}


def classifier32_state(weights: Mapping[str, torch.Tensor], prefix: str = "", what: str = "the network",
                       exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """A release ``classifier32`` / ``classifier32ABN`` stored under ``prefix``, in the host's names.

    ``module.`` is stripped; a plain BN ``bnN.<p>`` becomes ``bnN.bns.0.<p>`` and a branch
    ``bnN.bns.K.<p>`` stays; ``bn10`` (declared, never used by the releases' forward) is dropped
    (:func:`drop`). Every other key keeps its name, so :func:`check_strict` names what does not fit.
    """
    skip = set(exclude)
    names = strip_data_parallel((k for k in weights if k not in skip), prefix)
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unused = []
    for short, key in names.items():
        if short.split(".")[0] == _UNUSED_BN:
            unused.append(key)
            continue
        m = _PLAIN_BN.match(short)
        host = f"{m[1]}.bns.0.{m[2]}" if m else short
        if host in source:
            raise LayoutError(f"{what}: {source[host]} and {key} both map to the host's {host}")
        source[host] = key
        out[host] = weights[key]
    drop(weights, unused, "bn10: declared by the release's classifier32 but never used by its forward")
    return out


def _problems(missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str]) -> list[str]:
    """The parts of a does-not-fit message: each kind counted, its first :data:`SHOWN` named."""
    kinds = (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch(es)", shapes))
    return [f"{len(items)} {label}: {shown(items)}" for label, items in kinds if items]


def check_strict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """A :class:`LayoutError` naming, in one line, the keys ``state`` lacks, the ones it has beyond
    ``expected`` and the shapes that differ (the first :data:`SHOWN` of each, then a count)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = _problems(missing, unexpected, shapes)
    if not problems:
        return
    hint = ""
    if missing and all(".bns.1." in k for k in missing) and not unexpected:
        hint = " (the files hold one BN branch, a plain classifier32; this network has two, classifier32ABN)"
    elif unexpected and all(".bns.1." in k for k in unexpected) and not missing:
        hint = " (the files hold two BN branches, a classifier32ABN; this network has one, classifier32)"
    elif not state:
        hint = " (the files hold nothing for it)"
    raise LayoutError(f"{what} does not fit: " + "; ".join(problems) + hint)


def load_module(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` after :func:`check_strict` against its own state dict."""
    check_strict(state, module.state_dict(), what)
    module.load_state_dict(dict(state), strict=True)


def check_state(state: Any, expected: Mapping[str, Any], what: str) -> None:
    """:func:`check_strict` of a whole ``Method.state_dict()`` (nested) against a freshly set-up one.

    Top-level entries must match; tensors are compared by name and shape, except inside
    optimiser states (a fresh optimiser has none of its running buffers yet).
    """
    got, _ = flatten(state, what)
    want, _ = flatten(expected, "the method's state_dict()")

    def in_optimizer(key: str) -> bool:
        node: Any = expected
        for part in key.split(".")[:-1]:
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
            if isinstance(node, Mapping) and "state" in node and "param_groups" in node:
                return True
        return False

    top_missing = [k for k in expected if k not in state]
    top_unexpected = [k for k in state if k not in expected]
    missing = top_missing + [k for k in want if k not in got and k.split(".")[0] not in top_missing]
    unexpected = top_unexpected + [k for k in got if k not in want and k.split(".")[0] not in top_unexpected
                                   and not in_optimizer(k)]
    shapes = [f"{k} {list(got[k].shape)} (expected {list(want[k].shape)})"
              for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
    problems = _problems(missing, unexpected, shapes)
    if problems:
        raise LayoutError(f"{what} does not fit the method's state: " + "; ".join(problems))


# ------------------------------------------------------------------------------------ the releases


def arpl_release(weights: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """``(network, criterion)`` of the ARPL release's files (network and criterion files in any order).

    The network is in the host's ``Classifier32`` names (:func:`classifier32_state`); the criterion
    is ``{"points", "radius"}`` as the ``ARPLoss`` file holds them, or ``None`` when the files hold
    none (the ``Softmax`` criterion file is empty). ``Dist.centers``, the second name of
    ``points``, must equal it and is dropped.
    """
    crit = {k: k for k in weights if k in (*CRITERION_KEYS, CRITERION_ALIAS)}
    crit.update({k[len(DATA_PARALLEL):]: k for k in weights
                 if k.startswith(DATA_PARALLEL) and k[len(DATA_PARALLEL):] in (*CRITERION_KEYS, CRITERION_ALIAS)})
    net_keys = [k for k in weights if k not in crit.values()]
    if not net_keys:
        raise LayoutError("the ARPL release files hold no network (a classifier32 state dict, keys like "
                          "module.conv1.weight); pass the release's <name>_.pth as well as its criterion")
    if any(k.startswith(DIAS_NETWORKS["net"] + ".") for k in net_keys):
        raise LayoutError("the files are a DIAS release checkpoint (net2_state_dict, ...), not ARPL release files: "
                          "use --layout dias-release")
    net = classifier32_state(weights, exclude=crit.values())
    if not crit:
        return net, None
    criterion = {name: weights[crit[name]] for name in CRITERION_KEYS if name in crit}
    if CRITERION_ALIAS in crit:
        alias = weights[crit[CRITERION_ALIAS]]
        if "points" in criterion and not (alias.shape == criterion["points"].shape
                                          and torch.equal(alias, criterion["points"])):
            raise LayoutError("the ARPL criterion's Dist.centers differs from its points (in the release they are one "
                              "parameter under two names): not an ARPLoss file")
        drop(weights, [crit[CRITERION_ALIAS]],
             "the same parameter as points (ARPLoss: self.points = self.Dist.centers)")
    return net, criterion


def dias_release(weights: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The networks of a DIAS release checkpoint, in the host's names: ``net`` (``net2_state_dict``,
    the classifier) always, and ``copycat`` (``net1_state_dict``), ``G``, ``D`` when the file has them.

    The optimiser states are dropped; the checkpoint's ``epoch`` (0-based) is kept in
    ``weights.info["trained_epochs"]`` (+1). A file without ``net2_state_dict`` is read as the
    classifier's bare state dict.
    """
    checkpoint = any(k.startswith(DIAS_NETWORKS["net"] + ".") for k in weights)
    if not checkpoint:
        if not len(weights):
            raise LayoutError("the DIAS release file holds no tensors")
        return {"net": classifier32_state(weights, what="the DIAS classifier")}
    parts = {}
    for part, key in DIAS_NETWORKS.items():
        if any(k.startswith(key + ".") for k in weights):
            if part in ("net", "copycat"):
                parts[part] = classifier32_state(weights, key + ".", f"the DIAS release's {key}")
            else:
                parts[part] = plain_state(weights, key + ".")
    for opt in DIAS_OPTIMIZERS:
        drop_prefix(weights, opt + ".", "optimiser state (osrbench evaluate loads weights, not a training state)")
    if isinstance(weights, ExternalWeights) and "epoch" in weights.others:
        epoch = weights.others["epoch"]
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            weights.info["trained_epochs"] = epoch + 1
        drop(weights, ["epoch"], "the release's epoch counter (recorded as trained_epochs)")
    return parts


def mls_release(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The MLS release's shipped checkpoint (``pretrained_weights/tinyimagenet_<i>.pth``) in the host's
    ``Classifier32`` names (:func:`classifier32_state`: ``module.`` stripped, ``bn10`` dropped).

    One network file, no criterion: an ARPL criterion (``points``, ``radius``) or a DIAS checkpoint
    is refused, naming the layout that reads it.
    """
    if any(k.split(".")[-1] in CRITERION_KEYS or k.endswith(CRITERION_ALIAS) for k in weights):
        raise LayoutError("the files hold an ARPL criterion (points, radius), not an MLS release checkpoint: "
                          "use --layout arpl-release")
    if any(k.startswith(DIAS_NETWORKS["net"] + ".") for k in weights):
        raise LayoutError("the file is a DIAS release checkpoint (net2_state_dict, ...), not an MLS release "
                          "checkpoint: use --layout dias-release")
    if not len(weights):
        raise LayoutError("the MLS release file holds no tensors")
    return classifier32_state(weights, what="the MLS release network")
