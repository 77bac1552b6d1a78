"""``python -m osrbench.testing METHOD... [--scorer NAME]...``: the conformance report of each method and scorer."""

from __future__ import annotations

import sys
from typing import Sequence

from osrbench.testing.docs import hook_reference
from osrbench.testing.runner import check_method


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m osrbench.testing METHOD...``: print the conformance report of each method."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m osrbench.testing", description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*")
    p.add_argument("--device", default="cpu", help="where the methods' toy runs train: cpu (default), cuda, cuda:N, auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for the methods' toy runs (YAML value; repeatable), e.g. a learning "
                        "rate that suits the toy problem's dozen steps")
    p.add_argument("--scorer", action="append", default=[], metavar="NAME",
                   help="check this post-hoc scorer (osrbench.testing.scorers; repeatable)")
    p.add_argument("--hook-reference", action="store_true", help="print the hooks section of docs/PLUGINS.md")
    args = p.parse_args(argv)
    if args.hook_reference:
        print(hook_reference(), end="")
        return 0
    from osrbench.config import parse_overrides
    from osrbench.devices import check_device_name, pick_device
    from osrbench.errors import EXIT_USER, UserError, one_line

    try:
        if not args.methods and not args.scorer:
            raise UserError("nothing to check: name one or more methods and/or --scorer NAME "
                            "(osrbench list shows them), or --hook-reference")
        check_device_name(args.device)
        pick_device(args.device)  # cuda without a GPU, cuda:N beyond the last: one line, as every command
        overrides = parse_overrides(args.overrides)
    except UserError as exc:
        print(f"osrbench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    ok = True
    for name in args.methods:
        report = check_method(name, device=args.device, overrides=overrides, raise_on_failure=False)
        print(report)
        ok &= report.ok
    if args.scorer:
        from osrbench.testing.scorers import check_scorer

        for name in args.scorer:
            try:
                report = check_scorer(name, raise_on_failure=False)
            except UserError as exc:  # no such scorer: the one line the CLI gives
                print(f"osrbench: error: {one_line(exc)}", file=sys.stderr)
                return EXIT_USER
            print(report)
            ok &= report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(_main())
