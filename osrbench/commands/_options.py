"""What several commands share: the training options, the request they describe, table helpers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from osrbench import verify

if TYPE_CHECKING:  # the engine imports torch; registering a command must not
    from osrbench import engine


#: ``--protocol`` of the commands that run or evaluate one dataset.
PROTOCOL_HELP = "split protocol: auroc, f1, osrci, ssb or openood (default auroc; a dataset's only protocol where it has one)"
#: ``--split`` of the commands that run or evaluate one split.
SPLIT_HELP = "split index, or name under a protocol with named splits (ssb: easy, medium, hard; default 0)"


def resolve_protocol(args: argparse.Namespace) -> None:
    """Fill ``--protocol``'s default for ``args.dataset`` (``ssb`` for a dataset only ssb has) and read
    a ``--split`` name (``easy``) as the split's index."""
    from osrbench import plugins, protocols

    spec = plugins.get().dataset(args.dataset)
    if args.protocol is None:
        args.protocol = protocols.default_protocol(spec)
    if isinstance(getattr(args, "split", None), str):
        args.split = protocols.parse_split(args.split, spec, args.protocol)


class CommandParser(argparse.ArgumentParser):
    """A command's parser. ``help_tail``: a function whose text ends the command's ``--help``,
    called only when the help is shown (what it lists may need the plugins, which registering a
    command must not load)."""

    help_tail: Callable[[], str] | None = None

    def format_help(self) -> str:
        text = super().format_help()
        return text if self.help_tail is None else text.rstrip("\n") + "\n\n" + self.help_tail() + "\n"


def add_run_options(p: argparse.ArgumentParser, many_datasets: bool = False, dataset_help: str | None = None) -> None:
    """The options every training command shares (run, compare, sweep; a sweep takes several datasets).
    ``dataset_help``: ``--dataset`` is optional and does what this says when left out (compare)."""
    if many_datasets:
        p.add_argument("--datasets", "--dataset", dest="dataset", nargs="+", metavar="DATASET",
                       help="dataset names (osrbench list)")
    else:
        p.add_argument("--dataset", required=dataset_help is None,
                       help="dataset name (osrbench list)" + (f"; {dataset_help}" if dataset_help else ""))
    p.add_argument("--protocol", help=PROTOCOL_HELP)
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--recipe", help="a named recipe of the method (osrbench list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value); repeatable")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--out", type=Path, default=Path("runs"), help="results folder (default runs/)")
    verify.add_option(p)
    p.add_argument("--data-root", type=Path, help="data folder (default $OSRBENCH_DATA or ~/.cache/osrbench)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="checkpoint every N epochs (default: after the first epoch, then once SECONDS have "
                        "passed since the last checkpoint, see --checkpoint-interval; always after the last)")
    p.add_argument("--checkpoint-interval", type=float, default=60.0, metavar="SECONDS",
                   help="with the default --checkpoint-every: seconds between checkpoints (default 60)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log", dest="loggers", action="append", default=[], metavar="NAME[,NAME]",
                   help="log training to tensorboard, mlflow, wandb or a plugin's logger (osrbench plugins); "
                        "each an extra: pip install 'osrbench[mlflow]'")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help="the loggers' files (default: each run's folder; MLflow's store in --out)")


def add_pack_option(p: argparse.ArgumentParser) -> None:
    """``--pack``: how ``--jobs N`` local runs train at once (osrbench.pack)."""
    from osrbench.sweep import PACK_CHOICES

    p.add_argument("--pack", choices=PACK_CHOICES, default="auto",
                   help="with --jobs N: auto (default) trains the runs as one pack in this process, each on its "
                        "own CUDA stream, when they all replay from CUDA graphs on one CUDA device, else in N "
                        "processes; yes always packs (on a CPU it gains nothing); no always uses processes")


def add_std_option(p: argparse.ArgumentParser) -> None:
    """``--std``: which standard deviation over splits the tables show (and name)."""
    from osrbench.compare import STD_CHOICES

    p.add_argument("--std", choices=tuple(STD_CHOICES), default="ddof1",
                   help="std over splits: ddof1 = sample std (default, the papers'), ddof0 = population std "
                        "(OpenOOD's and the MLS code's; labelled in the output)")


def add_plot_format_option(p: argparse.ArgumentParser) -> None:
    """``--plot-format``: the format of the figures ``--plot`` writes."""
    p.add_argument("--plot-format", choices=("png", "pdf", "svg"), default="png",  # osrbench.plots.PLOT_FORMATS
                   help="with --plot: png (default), pdf or svg (vector, for a paper)")


def request_from_args(
    args: argparse.Namespace, method: str, split: int, seed: int, resume: str = "auto", force: bool = False
) -> engine.RunRequest:
    """The run request of ``method`` on one split and seed, from the options of :func:`add_run_options`."""
    from osrbench import engine
    from osrbench.config import parse_overrides
    from osrbench.loggers import parse as parse_loggers

    return engine.RunRequest(
        method=method, dataset=args.dataset, protocol=args.protocol, split=split, seed=seed,
        recipe=args.recipe, epochs=args.epochs, overrides=parse_overrides(args.overrides),
        device=args.device, out=args.out, data_root=args.data_root, resume=resume, force=force,
        checkpoint_every=args.checkpoint_every, checkpoint_interval=args.checkpoint_interval,
        progress=not args.quiet, deterministic=args.deterministic,
        loggers=parse_loggers(getattr(args, "loggers", None)), log_dir=getattr(args, "log_dir", None),
    )


def split_shown(rec: Any) -> str:
    """A record's split as users name it: ``2 (hard)`` under a protocol with named splits, else ``2``."""
    from osrbench import protocols

    return protocols.split_label(rec.dataset, rec.protocol, rec.split)


def tabulate(rows: list[list[Any]], headers: Sequence[str], fmt: str = "simple") -> str:
    from tabulate import tabulate as _tabulate

    return _tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def emit(text: str, fit: bool = True) -> None:
    """Print a command's plain-text tables (``fit``); on a terminal narrower than a table, its columns
    are folded to fit (osrbench.formats.fit_width). A file or a pipe gets the full width, and so does
    text that is not plain tables (``fit=False``: Markdown, LaTeX, HTML are copied, not read there)."""
    if fit and sys.stdout.isatty():
        import shutil

        from osrbench.formats import fit_width

        text = fit_width(text, shutil.get_terminal_size().columns)
    print(text)


def log(msg: str) -> None:
    """A progress or warning line: to stderr, so that stdout holds only the command's result."""
    print(msg, file=sys.stderr)
