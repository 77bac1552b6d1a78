"""``osrbench evaluate``: weights trained elsewhere, evaluated on one split, as an "external weights" record."""

from __future__ import annotations

import argparse
from pathlib import Path

from osrbench.commands._options import PROTOCOL_HELP, SPLIT_HELP, log, pct, resolve_protocol, split_shown, tabulate
from osrbench.commands.run import METRIC_ORDER

#: The layouts (osrbench.layouts.LAYOUTS; repeated so that registering the command imports no torch).
LAYOUT_NAMES = ("dias-release", "arpl-release", "mls-release", "cac-release", "medaf-release", "torchvision",
                "osrbench")

DESCRIPTION = """\
Evaluate weights trained elsewhere on one split: the method is set up exactly as `osrbench run`
would set it up (method, dataset, protocol, split, seed, recipe, --set), the files are loaded
instead of training, and the run is evaluated and written like a run: result.json, scores.npz and a
checkpoint.pt of the loaded state (so `rescore --from-checkpoint` and post-hoc scoring work on it).

Layouts:
  arpl-release  the ARPL release (iCGY96/ARPL): the network's <name>_.pth and, for ARPLoss, its
                <name>__criterion.pth (points, radius); methods softmax (--loss Softmax), arpl,
                arpl-cs (--cs). DataParallel 'module.' prefixes and the unused bn10 are handled.
  dias-release  the DIAS release (wjun0830/Difficulty-Aware-Simulator): its
                <item>_<epoch>_<batch>_checkpoint.pth.tar (net2 = the classifier, net1 = the Copycat,
                G, D), or the classifier's bare state dict; method dias.
  mls-release   the MLS release (sgvaze/osr_closed_set_all_you_need): its pretrained_weights/
                tinyimagenet_<i>.pth (VGG32 = classifier32, softmax-trained); method softmax (or
                openmax). File i is --protocol osrci --split i (not reversed); its README evaluates
                at 64 px with CIFAR normalisation: --recipe mls-paper.
  cac-release   the CAC release (dimitymiller/cac-openset): its
                <dataset>_<trial>_<name>CACclassifierAnchorLoss.pth ({'net', 'acc', 'epoch'}); method
                cac (plugin osrbench-cac), whose fit stage then replaces the anchors as its evaluation does.
  medaf-release the MEDAF release (Vanixxz/MEDAF): its ckpt/osr/<dataset>/<time>/epoch_<N>.pth
                ({'epoch', 'state_dict', 'optimizer', 'scheduler'}); method medaf (plugin osrbench-medaf).
  torchvision   a pretrained ImageNet-1K classifier's state_dict() with its 1000-way head (torchvision's
                or timm's resnet50, vit_b_16 / timm vit_base_patch16_*), evaluated without training as
                the MLS release evaluates ImageNet; method softmax with --set backbone=resnet50 (or
                vit_b16), on imagenet-ssb --split easy|hard: --recipe imagenet-eval.
  osrbench      an osrbench checkpoint.pt or a Method.state_dict() file; every method.
The releases number their five trials in reverse: a file of item i is --split 4-i here (ARPL:
--protocol osrci; DIAS: auroc or f1, after its runs/AUROC or runs/F1 folder).

The record is marked "external weights" (its external_weights field: layout, file names and
sha256, the keys not loaded and why). The files' hashes enter its config, so it has its own config
hash and run folder and is never averaged with a run trained here. Its epochs is the recipe's (what
the method was set up for; nothing is trained: history is empty, train time 0); trained_epochs in
external_weights says what the files state, when they do. Files are read with
torch.load(weights_only=True); a file that does not fit (a missing, unexpected or misshapen key) is
one error line and nothing is written."""


def cmd_evaluate(args: argparse.Namespace) -> int:
    from osrbench import external, protocols, results
    from osrbench.config import parse_overrides
    from osrbench.devices import check_device_name

    protocols.check_seed(args.seed)
    external.check_layout(args.layout)
    specs, hand_set = [], {}
    if args.scorer:
        from osrbench import plugins
        from osrbench.commands.score import parse_scorers

        reg = plugins.get()
        names, hand_set = parse_scorers(reg, args.scorer)
        specs = [reg.scorer(n) for n in names]
    check_device_name(args.device)
    results.check_writable_dir(args.out, "--out")
    resolve_protocol(args)
    req = external.EvaluateRequest(
        method=args.method, dataset=args.dataset, weights=tuple(args.weights or ()), layout=args.layout,
        protocol=args.protocol, split=args.split, seed=args.seed, recipe=args.recipe,
        overrides=parse_overrides(args.overrides), device=args.device, out=args.out, data_root=args.data_root,
        force=args.force,
    )
    out = external.evaluate(req, log=log)
    rec = out.record
    ext = rec.external_weights or {}
    files = ", ".join(f["name"] for f in ext.get("files", []))
    m = rec.metrics
    rows = [[k, pct(m[k])] for k in METRIC_ORDER if k in m]
    when = (f"evaluated in {rec.wall_time_s['eval']:.1f} s" if out.evaluated
            else "the stored record of these weights; --force evaluates them again")
    print(f"{rec.method} on {rec.dataset} ({rec.protocol} split {split_shown(rec)}, seed {rec.seed}) -- external weights, "
          f"layout {ext.get('layout')} ({files}); {rec.device}, {when}")
    print(tabulate(rows, ["metric", "%"]))
    if specs:
        from osrbench import records, rescore
        from osrbench.commands.score import SCORE_METRICS

        from osrbench.scoring import describe_params

        ph = rescore.ensure_posthoc(rec, specs, force=args.force, device=args.device, data_root=args.data_root,
                                    hand_set=hand_set)
        scores = records.read_scores(rec.dir, rec)
        rows = []
        for sp in specs:
            why = ph.not_applicable(sp.name)
            values = (["n/a"] * len(SCORE_METRICS) if why else
                      [pct(ph.metrics(sp.name, scores)[k]) for k in SCORE_METRICS])
            rows.append([sp.name, *values, "" if why else describe_params(ph.info[sp.name]), why or ""])
        print(f"post-hoc scorers (stored in {rec.dir}/posthoc.npz), %")
        print(tabulate(rows, ["scorer", *SCORE_METRICS, "parameters", "note"]))
    print(f"record: {rec.dir}/result.json (external weights)")
    return 0


def method_layouts() -> dict[str, list[str]]:
    """layout -> the installed methods that read it, from each method's ``external_layouts`` (the
    host's layout last: every method reads it)."""
    from osrbench import plugins
    from osrbench.method import Method

    out: dict[str, list[str]] = {}
    for name, spec in sorted(plugins.get().methods.items()):
        cls = spec.factory if isinstance(spec.factory, type) else type(spec.factory())
        if cls.load_external is not Method.load_external:
            for layout in getattr(cls, "external_layouts", ()):
                if layout != LAYOUT_NAMES[-1]:
                    out.setdefault(layout, []).append(name)
    out[LAYOUT_NAMES[-1]] = ["every method"]
    return out


def layouts_help() -> str:
    """The end of evaluate's help: every layout and the installed methods that read it (where the
    methods cannot be loaded, torch missing say, the host's layouts and why)."""
    try:
        found = method_layouts()
    except ImportError as exc:
        return f"Layouts: {', '.join(LAYOUT_NAMES)} (the installed methods cannot be loaded: {exc})"
    rows = "\n".join(f"  {layout:<14}{', '.join(names)}" for layout, names in found.items())
    return f"Layouts the installed methods read:\n{rows}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate weights trained elsewhere (a release's or an osrbench checkpoint) "
                                        "on one split; its --help lists every layout",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: osrbench evaluate --method arpl --dataset cifar10 --protocol osrci --split 4 "
                              "--layout arpl-release --weights net_.pth --weights net__criterion.pth")
    p.help_tail = layouts_help  # looked up when the help is shown: it loads the plugins
    p.add_argument("--method", required=True, help="method name (osrbench list); it must read --layout")
    p.add_argument("--dataset", required=True, help="dataset name (osrbench list)")
    p.add_argument("--protocol", help=PROTOCOL_HELP)
    p.add_argument("--split", default="0", help=SPLIT_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the set-up (default 0)")
    p.add_argument("--recipe", help="a named recipe of the method (osrbench list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value); repeatable")
    p.add_argument("--weights", action="append", metavar="FILE", required=True,
                   help="a weights file; repeat it for the ARPL release's network and criterion files")
    p.add_argument("--layout", required=True, metavar="LAYOUT", help="how the files are laid out: a release's layout or osrbench (listed at the end of this help)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="results folder (default runs/)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--data-root", type=Path, help="data folder (default $OSRBENCH_DATA or ~/.cache/osrbench)")
    p.add_argument("--scorer", help="also apply these post-hoc scorers (comma-separated, or all; osrbench list --scorers; "
                   "name:key=value sets a parameter by hand, as in osrbench score)")
    p.add_argument("--force", action="store_true", help="evaluate again even if the record of these weights exists")
    p.set_defaults(func=cmd_evaluate)
