"""``osrbench new-plugin NAME``: write a ready method-plugin package ``osrbench-NAME/``."""

from __future__ import annotations

import argparse
from pathlib import Path

from osrbench import scaffold


def cmd_new_plugin(args: argparse.Namespace) -> int:
    root = scaffold.new_plugin(args.name, args.dir, folder=args.folder)
    pkg = scaffold.package_name(args.name)
    print(f"wrote {root}/: pyproject.toml, README.md, {pkg}/plugin.py, tests/test_conformance.py")
    print("next:")
    print(f"  cd {root}")
    for command, _ in scaffold.setup_commands(args.name):
        print(f"  {command}")
    print(f"  osrbench compare {args.name} dias --dataset digits --epochs 2")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new-plugin", help="write a ready method-plugin package osrbench-NAME/")
    p.add_argument("name", metavar="NAME", help="method and plugin name: lowercase letters, digits, hyphens")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create osrbench-NAME/ (default .)")
    p.add_argument("--folder", metavar="FOLDER", help="the package folder's name (default osrbench-NAME)")
    p.set_defaults(func=cmd_new_plugin)
