"""What a sweep cell shows and where its scalars go: one setting for every loop inside the cell.

``SweepRunner`` runs each cell inside :func:`cell_context` (in this process, a worker process or a
submitit job alike), and the code inside reads it instead of taking its own flags:

* :func:`show_bars`: per-cell progress bars (the Trainer's step bar, and any loop drawn with
  :func:`progress_bar`) show inside a cell only when the sweep runs with ``--verbose``, whatever
  the caller asked for; outside a cell the caller's own ``progress`` decides. So worker processes
  draw nothing over the sweep's one bar unless asked to.
* :func:`report_status`: a short line (``"train 120/400"``) shown beside the running cell's name in
  the sweep's bar (a no-op outside a cell).
* :func:`wandb_sink`: with ``--wandb`` each cell is one Weights & Biases run (``project``, group =
  the sweep's output folder, name = the cell id, config = the cell's parameters and settings); the
  Trainer adds this sink beside its JSONL / TensorBoard ones, and the runner logs the cell's result
  row into it. ``wandb`` is imported only then.
"""
from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

WANDB_MISSING = "--wandb needs the wandb package: pip install wandb"


@dataclass
class CellContext:
    """The running cell: its id, whether per-cell bars show, where its status line goes, its W&B run."""
    name: str
    verbose: bool = False
    status: Callable[[str], None] | None = None
    wandb_run: Any = None
    _prefixes: set[str] = field(default_factory=set)


_CURRENT: CellContext | None = None


def current_cell() -> CellContext | None:
    """The cell this code runs in (``None`` outside a sweep cell)."""
    return _CURRENT


def show_bars(requested: bool = True) -> bool:
    """Whether a per-cell progress bar should draw: the sweep's ``verbose`` inside a cell, else ``requested``."""
    cell = _CURRENT
    return bool(requested) if cell is None else cell.verbose


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any):
    """A ``tqdm`` bar (``leave=False``, dynamic width) that draws when :func:`show_bars` (``enabled``) says so."""
    from tqdm.auto import tqdm
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    disable = bool(kwargs.pop("disable", False))
    return tqdm(iterable, disable=disable or not show_bars(enabled), **kwargs)


def report_status(text: str) -> None:
    """Show ``text`` beside the running cell's name in the sweep's bar (nothing outside a cell)."""
    cell = _CURRENT
    if cell is not None and cell.status is not None:
        with contextlib.suppress(Exception):  # a display must never stop a cell
            cell.status(text)


def import_wandb():
    """``wandb``, or an ImportError whose message says how to install it."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError(WANDB_MISSING) from e
    return wandb


def scalars(record: dict[str, Any]) -> dict[str, float | int | bool]:
    """The entries of ``record`` W&B can plot: numbers and booleans (strings, lists, None left out)."""
    return {k: v for k, v in record.items() if isinstance(v, numbers.Real)}


@contextlib.contextmanager
def cell_context(name: str, verbose: bool = False, status: Callable[[str], None] | None = None,
                 wandb: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> Iterator[CellContext]:
    """Run the block as sweep cell ``name``. ``wandb``: ``None`` (off) or the options of the cell's
    W&B run (``project``, ``group``, ``dir``; anything else goes to ``wandb.init`` as is), which gets
    ``name`` and ``config``; it finishes when the block ends (``exit_code=1`` after an exception)."""
    global _CURRENT
    run = None
    if wandb is not None:
        opts = {k: v for k, v in wandb.items() if v is not None}
        run = import_wandb().init(name=name, config=dict(config or {}), **opts)
    outer, _CURRENT = _CURRENT, CellContext(name, bool(verbose), status, run)
    try:
        yield _CURRENT
    except BaseException:
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
            run = None
        raise
    finally:
        _CURRENT = outer
        if run is not None:
            run.finish()


def log_result(row: dict[str, Any]) -> None:
    """Log a cell's result row (its scalars, as ``result/<key>``) into the cell's W&B run, if any."""
    cell = _CURRENT
    if cell is not None and cell.wandb_run is not None:
        values = {f"result/{k}": v for k, v in scalars(row).items()}
        if values:
            cell.wandb_run.log(values)


class WandbSink:
    """A Trainer's log records into the cell's W&B run as ``<prefix>/<key>`` against ``<prefix>/step``
    (the prefix names the task's class, so two trainings in one cell, e.g. a tokenizer then a model,
    keep apart, and equal tasks share keys across the cells of a sweep)."""

    def __init__(self, run: Any, prefix: str):
        self.run, self.prefix = run, prefix
        define = getattr(run, "define_metric", None)
        if callable(define):
            with contextlib.suppress(Exception):
                define(f"{prefix}/*", step_metric=f"{prefix}/step")

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({f"{self.prefix}/{k}": v for k, v in scalars(record).items()})

    def close(self) -> None:
        pass  # the run is the cell's: cell_context finishes it


def wandb_sink(name: str) -> WandbSink | None:
    """A :class:`WandbSink` into the running cell's W&B run (``None`` without one); ``name`` (e.g. the
    task's class) becomes the key prefix, numbered ``name_2``, ... if the cell already used it."""
    cell = _CURRENT
    if cell is None or cell.wandb_run is None:
        return None
    prefix, n = name, 1
    while prefix in cell._prefixes:
        n += 1
        prefix = f"{name}_{n}"
    cell._prefixes.add(prefix)
    return WandbSink(cell.wandb_run, prefix)
