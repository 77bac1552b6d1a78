"""``osrbench leaderboard``: a static site (index.html and a page per benchmark) from export bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from osrbench.commands._options import log


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from osrbench import results
    from osrbench.site import leaderboard

    results.check_writable_dir(args.out, "--out folder")
    pages = leaderboard.build(args.bundles)  # every bundle verified and consistent before anything is written
    written = leaderboard.write_site(args.out, pages)
    log(f"wrote {len(written)} page(s) to {args.out}: open {args.out / 'index.html'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard", help="static leaderboard site from verified export bundles (one page per benchmark)",
        description="Verify each bundle as `osrbench export --validate` does and write a static site: index.html "
                    "and one self-contained page per benchmark (dataset, protocol and split definitions). Bundles "
                    "of one dataset and protocol with other split definitions are refused.",
        epilog="example: osrbench leaderboard lab-a.json lab-b.json --out site/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE",
                   help="export bundles (osrbench export / compare --export)")
    p.add_argument("--out", type=Path, default=Path("site"), help="folder to write the site into (default site/)")
    p.set_defaults(func=cmd_leaderboard)
