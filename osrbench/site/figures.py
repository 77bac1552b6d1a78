"""The figures of :mod:`osrbench.plots` as SVG text to put inside a page.

Each figure is drawn by the plots module itself (one drawing per figure for PNG and SVG alike)
into a temporary ``.svg`` file and read back; the XML prolog, doctype, comments and metadata
are dropped, so the figure is one ``<svg>`` element.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Callable

from osrbench.site.html import Markup

#: What a figure inside a page does without: comments (matplotlib writes each label's text into
#: one) and the RDF metadata block (its namespace and creator URLs).
_DROP = re.compile(r"<!--.*?-->|<metadata>.*?</metadata>", re.S)


def available() -> str | None:
    """``None`` when figures can be drawn, else the one line saying why not (matplotlib missing)."""
    from osrbench import plots

    try:
        plots.require_matplotlib()
    except plots.PlotsUnavailable as exc:
        return str(exc).replace("--plot needs", "figures need")
    return None


def svg(draw: Callable[[Path], Path]) -> Markup:
    """The ``<svg>`` element that ``draw(path)`` (a :mod:`osrbench.plots` function) writes to ``path``."""
    with tempfile.TemporaryDirectory(prefix="osrbench-svg-") as tmp:
        text = Path(draw(Path(tmp) / "figure.svg")).read_text(encoding="utf-8")
    text = _DROP.sub("", text[text.index("<svg"):])
    return Markup(text.strip())
