"""One vocabulary of output formats for every command that prints results, and tables that fit a terminal.

``--format`` of compare, report, score and rescore takes the names of :data:`FORMATS`; each command
accepts the subset it can write (:func:`parse_format` says which). The names these commands took
before stay as aliases (:data:`ALIASES`: ``github`` is ``md``, ``simple`` is ``text``), and a plain-text
command still takes any other tabulate style (``grid``, ``rst``) as a style of ``text``, so existing
scripts keep working.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Sequence

from osrbench.errors import UsageError

#: Every format name, with what it writes.
FORMATS = {
    "text": "plain-text tables for a terminal",
    "md": "Markdown (GitHub) tables",
    "csv": "comma-separated values",
    "latex": "LaTeX tables",
    "json": "one JSON document",
    "html": "HTML",
}
#: Older names (tabulate's, and report's spelled out) -> the format they mean.
ALIASES = {"simple": "text", "plain": "text", "github": "md", "pipe": "md", "markdown": "md"}
#: The tabulate style of each format that is written as tabulate tables.
TABLE_STYLE = {"text": "simple", "md": "github", "latex": "latex", "html": "html"}


@dataclass(frozen=True)
class Format:
    """A parsed ``--format``: its name in :data:`FORMATS` and, for tables, the tabulate style."""

    name: str
    style: str | None = None


def parse_format(value: str, supported: Sequence[str], flag: str = "--format") -> Format:
    """``value`` as one of ``supported`` (names of :data:`FORMATS`), an alias of one, or (where
    ``text`` is supported) another tabulate style; a one-line :class:`UsageError` otherwise."""
    name = ALIASES.get(value, value)
    if name in supported:
        return Format(name, TABLE_STYLE.get(name))
    if "text" in supported and value not in FORMATS:
        from tabulate import tabulate_formats

        if value in tabulate_formats:  # grid, rst, latex_booktabs, ...: a style of plain-text tables
            return Format("text", value)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    aliases = ", ".join(f"{a} = {n}" for a, n in ALIASES.items() if n in supported)
    raise UsageError(f"unknown {flag} {shown} (valid: {', '.join(supported)}"
                     + (f"; also {aliases}" if aliases else "") + ")")


def format_metavar(supported: Sequence[str]) -> str:
    """``{md,csv,...}``: the metavar of a ``--format`` (usage lines show it; shell completion offers its names)."""
    return "{" + ",".join(supported) + "}"


def format_help(supported: Sequence[str], default: str, extra: str = "") -> str:
    """The help text of a ``--format`` option that takes ``supported``."""
    old = ", ".join(f"{a} ({n})" for a, n in ALIASES.items() if n in supported)
    return f"output format: {', '.join(supported)} (default {default}){extra}; older names still work: {old}"


# -------------------------------------------------------------------------------- terminal width

_RULE = re.compile(r"^-+(?:  -+)*$")  # the rule under the headers of a tabulate "simple" table


def fit_width(text: str, width: int, keep: int = 1) -> str:
    """``text`` with each plain-text (tabulate ``simple``) table wider than ``width`` folded: its
    columns are cut into consecutive groups that fit, each printed as its own table under the same
    first ``keep`` columns (the row names), one after another. A longer line of prose is wrapped."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and _RULE.match(lines[i + 1]) and len(lines[i + 1]) > width:
            spans = [m.span() for m in re.finditer(r"-+", lines[i + 1])]
            end = i + 2
            while end < len(lines) and _is_row(lines[end], spans):
                end += 1
            out.extend(_fold(lines[i:end], spans, width, keep))
            i = end
        else:
            out.extend(textwrap.wrap(lines[i], width, subsequent_indent="  ", break_long_words=False,
                                     break_on_hyphens=False) if len(lines[i]) > width else [lines[i]])
            i += 1
    return "\n".join(out)


def _is_row(line: str, spans: list[tuple[int, int]]) -> bool:
    """``line`` is a row of the table whose column ``spans`` are given: not blank, no longer than
    the rule, blank in every gap between columns (tabulate strips a row's trailing blanks)."""
    return bool(line.strip()) and len(line) <= spans[-1][1] and all(
        not line[b:b + 2].strip() for _, b in spans[:-1])


def _fold(table: list[str], spans: list[tuple[int, int]], width: int, keep: int) -> list[str]:
    keep = min(keep, len(spans) - 1)
    fixed = spans[:keep]
    used = sum(b - a + 2 for a, b in fixed)
    groups: list[list[tuple[int, int]]] = [[]]
    for span in spans[keep:]:
        size = span[1] - span[0] + 2
        if groups[-1] and used + sum(b - a + 2 for a, b in groups[-1]) + size - 2 > width:
            groups.append([])
        groups[-1].append(span)
    out: list[str] = []
    for n, group in enumerate(groups):
        if n:
            out.append("")
        for line in table:
            out.append("  ".join(line[a:b].ljust(b - a) for a, b in [*fixed, *group]).rstrip())
    return out
