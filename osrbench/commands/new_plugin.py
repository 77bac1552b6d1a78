"""``osrbench new-plugin NAME [--scorer]``: write a ready method- or scorer-plugin package ``osrbench-NAME/``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from osrbench import scaffold


def cmd_new_plugin(args: argparse.Namespace) -> int:
    kind = "scorer" if args.scorer else "method"
    root = scaffold.new_plugin(args.name, args.dir, folder=args.folder, kind=kind)
    pkg = scaffold.package_name(args.name)
    print(f"wrote {shlex.quote(f'{root}/')}: pyproject.toml, README.md, {pkg}/plugin.py, tests/test_conformance.py")
    print("next:")
    print(f"  cd {shlex.quote(str(root))}")  # pasted as it is, even when a folder name holds a space
    for command, _ in scaffold.setup_commands(args.name, kind) + scaffold.use_commands(args.name, kind):
        print(f"  {command}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new-plugin", help="write a ready method-plugin (or, with --scorer, scorer-plugin) package "
                                          "osrbench-NAME/",
                       epilog="example: osrbench new-plugin mymethod --dir plugins; then pip install -e "
                              "plugins/osrbench-mymethod")
    p.add_argument("name", metavar="NAME", help="method (or scorer) and plugin name: lowercase letters, digits, "
                                                "hyphens")
    p.add_argument("--scorer", action="store_true",
                   help="write a post-hoc scorer plugin (osrbench score, compare --score) instead of a method")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create osrbench-NAME/ (default .)")
    p.add_argument("--folder", metavar="FOLDER", help="the package folder's name (default osrbench-NAME)")
    p.set_defaults(func=cmd_new_plugin)
