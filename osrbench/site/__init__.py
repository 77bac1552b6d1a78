"""Results that travel: the self-contained report page and the static leaderboard.

- :mod:`osrbench.site.html`: the one place text becomes HTML (:func:`~osrbench.site.html.esc`,
  :func:`~osrbench.site.html.tag`), the page frame with its inline style, sorting script and
  content security policy, and the sortable table.
- :mod:`osrbench.site.figures`: the figures of :mod:`osrbench.plots` as inline SVG text.
- :mod:`osrbench.site.report_page`: ``osrbench report --format html``, from result records.
- :mod:`osrbench.site.leaderboard`: ``osrbench leaderboard``, from verified export bundles.

Records are read through :mod:`osrbench.records` / :mod:`osrbench.report`, bundles through
:mod:`osrbench.export`; nothing here opens a result file itself. A page needs no network when it
is viewed: styles, script and figures are inside it.
"""
