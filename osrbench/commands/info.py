"""What is installed and available: ``osrbench list``, ``plugins``, ``splits`` and ``data``."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from osrbench.commands._options import tabulate
from osrbench.errors import EXIT_USER, UsageError


def cmd_list(args: argparse.Namespace) -> int:
    from osrbench import plugins, protocols, registry

    reg = plugins.get()
    if args.options is not None:
        from osrbench import config

        spec = reg.method(args.options)  # an unknown name: one line with a did-you-mean, exit 2
        config.check_options(spec)
        defaults = {**config.ENGINE_DEFAULTS, **spec.defaults}
        options = config.options_of(spec)
        rows = []
        for key, default in defaults.items():
            opt = options.get(key)
            kinds = sorted({type(c).__name__ for c in opt.choices}) if opt and opt.choices else [type(default).__name__]
            rows.append([key, json.dumps(default, default=repr), " | ".join(kinds),
                         (opt.allowed_span() if opt and opt.span else opt.allowed() if opt else "") or "-",
                         opt.help if opt else ""])
        print(f"Config keys of {spec.name} (--set KEY=VALUE; engine keys first, then the method's own)")
        print(tabulate(rows, ["key", "default", "type", "allowed", "help"]))
        return 0
    if args.recipe is not None:
        return _recipe(reg, args.recipe)
    if args.scorers:
        from osrbench import scoring

        rows = []
        for name, sp in reg.scorers.items():
            tuned = "tuned" if scoring.tunes_by_default(sp) else "--tune"
            params = ", ".join(f"{k}={v}" + _notes(sp.options[k].allowed() if k in sp.options else "",
                                                   f"{tuned} over {list(sp.grid[k])}" if k in sp.grid else "")
                               for k, v in sp.params.items()) or "-"
            rows.append([name, reg.plugin_of("scorer", name).name, ", ".join(sorted(sp.needs)), params,
                         sp.description])
        print("Post-hoc scorers (osrbench score --scorer NAME or NAME:KEY=VALUE; compare --score NAME)")
        print(tabulate(rows, ["scorer", "plugin", "needs", "parameters (default)", "description"]))
        return 0
    if args.cite:
        return _cite(reg)
    std = registry.load().standard_recipes
    rows = []
    for name, spec in sorted(reg.methods.items()):
        recipes = ", ".join(f"{r}*" if r == spec.default_recipe else r for r in spec.recipes) or "-"
        rows.append([name, reg.plugin_of("method", name).name, recipes, std.get(name, "-"), spec.description])
    print("Methods (* = default recipe)")
    print(tabulate(rows, ["method", "plugin", "recipes", "standard", "description"]))
    rows = []
    for name, ds in reg.datasets.items():
        sizes = []
        for proto in protocols.protocol_names():
            if protocols.reader_of(proto) is not None:  # its splits are files under the data root
                continue
            try:
                s = protocols.get_split(ds, proto, 0)
                names = protocols.split_names(ds, proto)
                if names is None:
                    sizes.append(f"{proto} {protocols.num_splits(ds, proto)}x{len(s.known)}/{len(s.unknown)}")
                else:  # same known classes, one unknown set per named split
                    sizes.append(f"{proto} {len(s.known)}/" + ", ".join(
                        f"{len(protocols.get_split(ds, proto, k).unknown)} {n}" for k, n in enumerate(names)))
            except protocols.SplitError:
                pass
        rows.append([name, ds.image_size, ds.augment, "; ".join(sizes), ds.description])
    print("\nDatasets (protocol: splits x known/unknown classes)")
    print(tabulate(rows, ["dataset", "size", "augment", "protocols", "description"]))
    rows = [[n, e.get("description", "")] for n, e in registry.load().protocols.items()]
    print("\nProtocols")
    print(tabulate(rows, ["protocol", "description"]))
    return 0


def _cite(reg: Any) -> int:
    """``list --cite``: the paper of each method and scorer, of each protocol and of each dataset."""
    from osrbench import registry

    reg_doc = registry.load()
    sections = [
        ("Methods", [(n, s.citation) for n, s in sorted(reg.methods.items())]),
        ("Post-hoc scorers", [(n, s.citation) for n, s in sorted(reg.scorers.items())]),
        ("Protocols (split definitions)", [(n, e.get("cite", "")) for n, e in reg_doc.protocols.items()]),
        ("Datasets", [(n, reg_doc.datasets.get(n, {}).get("cite", "")) for n in reg.datasets]),
    ]
    print("How to cite what a result used (and osrbench itself: CITATION.cff in its repository)")
    for title, rows in sections:
        print(f"\n{title}")
        print(tabulate([[n, textwrap.fill(c, 90) if c else "- (no citation given)"] for n, c in rows],
                       ["name", "cite"]))
    return 0


def _recipe(reg: Any, name: str) -> int:
    """``list --recipe NAME``: what recipe NAME sets, per method that has it and per dataset scope
    (``*``: every dataset, applied first; then the dataset's own entry), next to the method's default."""
    from osrbench import config

    having = {m: spec for m, spec in sorted(reg.methods.items()) if name in spec.recipes}
    if not having:
        known = sorted({r for spec in reg.methods.values() for r in spec.recipes})
        raise UsageError(f"no method has a recipe {name!r} (recipes: {', '.join(known) or 'none'})")
    rows = []
    for method, spec in having.items():
        defaults = {**config.ENGINE_DEFAULTS, **spec.defaults}
        for scope, values in spec.recipes[name].items():
            for key, value in values.items():
                shown = json.dumps(defaults.get(key), default=repr)
                rows.append([method, scope, key, json.dumps(value, default=repr), shown])
        if not spec.recipes[name]:
            rows.append([method, "*", "-", "(sets nothing: the defaults)", ""])
    print(f"Recipe {name} (--recipe {name}): the keys it sets, per method and dataset; '*' applies to every "
          "dataset first, then the dataset's own entry")
    print(tabulate(rows, ["method", "dataset", "key", "value", "method default"]))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from osrbench import plugins

    infos = [i.as_dict() for i in plugins.get().infos.values()]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    rows = [[i["name"], i["distribution"], i["version"], ", ".join(i["methods"]) or "-",
             ", ".join(i["datasets"]) or "-", ", ".join(i["scorers"]) or "-", i["error"] or "ok"] for i in infos]
    print(tabulate(rows, ["plugin", "distribution", "version", "methods", "datasets", "scorers", "status"]))
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from osrbench import plugins, protocols

    reg = plugins.get()
    ds = reg.dataset(args.dataset)
    if args.protocol is None:
        args.protocol = protocols.default_protocol(ds)
    if protocols.split_names(ds, args.protocol) is not None:
        return _named_splits(ds, args.protocol)
    n = protocols.num_splits(ds, args.protocol)
    rows = []
    seen: dict[Any, int] = {}
    for i in range(n):
        s = protocols.get_split(ds, args.protocol, i, root=args.data_root)
        dup = seen.setdefault(s.class_set_key, i)
        rows.append([i, " ".join(map(str, s.known)), " ".join(map(str, s.unknown)), s.hash,
                     "" if dup == i else f"same classes as split {dup}"])
    print(f"{ds.name}, protocol {args.protocol}: known class ids in label order (id at position i = label i)")
    print(tabulate(rows, ["split", "known", "unknown", "hash", "note"]))
    return 0


def _named_splits(ds: Any, protocol: str) -> int:
    """``splits`` of a protocol with named splits: the known classes and each difficulty's unknown
    classes as the table holds them (the release's lists), then what each named split evaluates."""
    from osrbench import protocols, registry

    table = registry.load().named_splits[protocol][ds.table]
    known = " ".join(map(str, table.known))
    if table.known == tuple(range(len(table.known))):
        known = f"0-{len(table.known) - 1} (all {len(table.known)} classes, label = id)"
    print(f"{ds.name}, protocol {protocol}: known class ids in label order (id at position i = label i)")
    print(f"known ({len(table.known)}): {known}")
    for diff, ids in table.unknown.items():
        print(f"{diff} ({len(ids)}): {' '.join(map(str, ids))}")
    rows = []
    for k, name in enumerate(table.splits):
        s = protocols.get_split(ds, protocol, k)
        rows.append([k, name, " + ".join(table.splits[name]), len(s.unknown), s.hash])
    print()
    print(tabulate(rows, ["split", "name", "unknown classes", "n unknown", "hash"]))
    if any(isinstance(c, str) for ids in table.unknown.values() for c in ids):
        print("unknown wnids have class id number of known classes + position in the sorted union of the lists")
    return 0


#: ``data check`` fits a terminal this wide.
DATA_CHECK_WIDTH = 100


def cmd_data(args: argparse.Namespace) -> int:
    from osrbench import plugins
    from osrbench.session import default_data_root

    reg = plugins.get()
    root = args.data_root or default_data_root()
    names = [args.name] if args.name else list(reg.datasets)
    specs = [reg.dataset(n) for n in names]
    if args.action == "download":
        from osrbench.datasets import DataNotFound

        for spec in specs:
            if spec.download is None:
                print(f"{spec.name}: nothing to download")
                continue
            try:
                spec.download(Path(root))
            except DataNotFound as exc:
                raise UsageError(str(exc)) from None
            print(f"{spec.name}: downloaded to {root}")
        return 0
    rows, hints = [], []
    # what the name and status columns and their two gaps leave of the width
    name_width = max(len(n) for n in [*(s.name for s in specs), "dataset"])
    licence_width = DATA_CHECK_WIDTH - name_width - len("not ready") - 4
    for spec in specs:
        problems = spec.check(Path(root))
        rows.append([spec.name, "ready" if not problems else "not ready",
                     textwrap.fill(spec.licence, max(licence_width, 20))])
        if problems:  # under the table, wrapped: inside a column they pushed it 300+ characters wide
            hints += ["", f"{spec.name}:"] + [textwrap.fill(line, DATA_CHECK_WIDTH, initial_indent="  - ",
                                                             subsequent_indent="    ", break_on_hyphens=False,
                                                             break_long_words=False)  # paths stay whole
                                               for line in problems]
    print(f"data root: {root}")
    print(tabulate(rows, ["dataset", "status", "licence"]))
    print("\n".join(hints))
    return EXIT_USER if (hints and args.name) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="methods, datasets and protocols",
                       epilog="example: osrbench list --options arpl; osrbench list --cite")
    p.add_argument("--options", metavar="METHOD",
                   help="instead: the config keys of METHOD with default, type, allowed values and help")
    p.add_argument("--scorers", action="store_true", help="instead: the post-hoc scorers (osrbench score)")
    p.add_argument("--cite", action="store_true",
                   help="instead: the paper to cite for each method, scorer, protocol and dataset")
    p.add_argument("--recipe", metavar="NAME",
                   help="instead: what recipe NAME sets (key, value, default) per method and dataset")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="installed plugins and their status",
                       epilog="example: osrbench plugins --json")
    p.add_argument("--json", action="store_true", help="as JSON: one object per plugin, with its error if any")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("splits", help="the class splits of a dataset under a protocol",
                       epilog="example: osrbench splits cifar10 --protocol osrci")
    p.add_argument("dataset", help="dataset name (osrbench list)")
    p.add_argument("--protocol", help="default auroc; the dataset's only protocol where it has one (cub: ssb)")
    p.add_argument("--data-root", type=Path, help="where a protocol of files (openood) finds them")
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser("data", help="check or download datasets",
                       epilog="example: osrbench data check; osrbench data download svhn")
    p.add_argument("action", choices=["check", "download"],
                   help="check: which datasets are ready under the data root; download: fetch those that can be")
    p.add_argument("name", nargs="?", help="only this dataset (default: every dataset)")
    p.add_argument("--data-root", type=Path, help="data folder (default $OSRBENCH_DATA or ~/.cache/osrbench)")
    p.set_defaults(func=cmd_data)


def _notes(*notes: str) -> str:
    """`` (a; b)`` of the notes that are not empty; ``""`` without any."""
    kept = [n for n in notes if n]
    return f" ({'; '.join(kept)})" if kept else ""
