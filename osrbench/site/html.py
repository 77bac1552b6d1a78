"""The one place text becomes HTML, and the frame every page shares.

Every string that reaches a page goes through :func:`esc` (``<``, ``>``, ``&`` and both quotes
become entities), whether it is a cell, a heading or an attribute value: :func:`tag` escapes its
children and attribute values unless they are :class:`Markup`, which only this module and the
SVG figures of :mod:`osrbench.site.figures` make. So a method, recipe or plugin named
``<script>...</script>`` in a record or bundle shows as text. As a second wall, each page's content
security policy lets run only the one script written here (by its sha256), loads nothing from the
network and allows no plugins or frames.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


class Markup(str):
    """HTML that is safe to insert as it is: built by :func:`tag` / :func:`join` from escaped parts."""


def esc(value: Any) -> Markup:
    """``value`` as HTML text (:class:`Markup` passes through: it is escaped already)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """The parts, each escaped unless it is :class:`Markup`, one after the other."""
    return Markup(esc(sep).join(esc(p) for p in parts if p is not None))


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``<name attrs>children</name>``; ``class_`` is ``class``, ``data_value`` is ``data-value``;
    an attribute that is ``None`` or ``False`` is left out, ``True`` is written bare."""
    out = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        out.append(f" {key}" if value is True else f' {key}="{esc(value)}"')
    return Markup(f"<{name}{''.join(out)}>{join(children)}</{name}>")


@dataclass(frozen=True)
class Num:
    """A numeric table cell: shown as ``text``, sorted and compared by ``value`` (``None``: missing)."""

    value: float | None
    text: str
    title: str | None = None

    @property
    def finite(self) -> bool:
        return self.value is not None and math.isfinite(self.value)


def pct(x: float | None) -> Num:
    """A fraction shown in % with two decimals (``-`` when undefined), sorted by its full value."""
    if x is None or not math.isfinite(x):
        return Num(None, "-")
    return Num(float(x), f"{100 * x:.2f}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], best: Mapping[int, str] | None = None,
          caption: str | None = None, cls: str = "sortable") -> Markup:
    """A table that sorts by any column when its header is clicked (the page's script).

    ``best``: column index -> ``"max"`` or ``"min"``: the best finite :class:`Num` of that column
    (ties: all of them) gets the ``best`` class and a mark. A :class:`Num` cell carries its full
    value in ``data-value``, which sorting uses; missing values sort last either way.
    """
    marks: dict[int, float] = {}
    for col, how in (best or {}).items():
        values = [r[col].value for r in rows if isinstance(r[col], Num) and r[col].finite]
        if values:
            marks[col] = max(values) if how == "max" else min(values)
    head = tag("thead", tag("tr", *(tag("th", h, scope="col", title="click to sort") for h in headers)))
    body = []
    for r in rows:
        cells = []
        for col, cell in enumerate(r):
            if isinstance(cell, Num):
                is_best = col in marks and cell.finite and cell.value == marks[col]
                cells.append(tag("td", cell.text, tag("span", " \u2605", class_="mark") if is_best else None,
                                 class_="num best" if is_best else "num",
                                 data_value=repr(cell.value) if cell.finite else "", title=cell.title))
            else:
                cells.append(tag("td", cell))
        body.append(tag("tr", *cells))
    return tag("table", tag("caption", caption) if caption else None, head, tag("tbody", *body), class_=cls)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;
padding:0 1em;color:#1b1f24;background:#fff}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
caption{text-align:left;font-weight:600;padding:.2em 0}
th,td{border:1px solid #d0d7de;padding:.25em .55em;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700;background:#e6f4ea}.mark{color:#1a7f37}
code,.hash{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.note{color:#57606a}.bad{color:#cf222e;font-weight:600}.good{color:#1a7f37;font-weight:600}
figure{display:inline-block;margin:.3em;vertical-align:top}figure svg{max-width:100%;height:auto}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
nav a{margin-right:1em}
"""

#: Sorts a ``table.sortable`` by the clicked header's column: numbers by ``data-value``, text by
#: its content; a second click reverses; missing values stay last.
SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    if (!cell) { return null; }
    var v = cell.getAttribute("data-value");
    if (v !== null) { return v === "" ? null : parseFloat(v); }
    return cell.textContent.trim();
  }
  function sortBy(table, th, col) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(table, th, col); } });
    });
  });
})();
"""


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


#: Nothing from the network, no plugins or frames; inline styles (the page's and the SVGs');
#: images only as data; and only the page's own script runs.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
       f"script-src '{_script_hash(SCRIPT)}'")


def document(title: str, body: Markup) -> str:
    """A whole page: the frame, ``title`` (escaped) and ``body`` (already HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
