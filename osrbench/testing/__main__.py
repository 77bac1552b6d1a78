"""``python -m osrbench.testing METHOD...``: the conformance report of each method."""

from __future__ import annotations

from typing import Sequence

from osrbench.testing.docs import hook_reference
from osrbench.testing.runner import check_method


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m osrbench.testing METHOD...``: print the conformance report of each method."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m osrbench.testing", description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hook-reference", action="store_true", help="print the hooks section of docs/PLUGINS.md")
    args = p.parse_args(argv)
    if args.hook_reference:
        print(hook_reference(), end="")
        return 0
    ok = True
    for name in args.methods:
        report = check_method(name, device=args.device, raise_on_failure=False)
        print(report)
        ok &= report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(_main())
