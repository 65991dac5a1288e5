"""A resumable grid of cells: each cell runs once, its result is saved atomically, reruns skip it.

Every sweep (``latentar sweep variance``, ``sweep ip``, ``compare discrete``, ``softprompt bench``)
lists its cells as dicts of parameters and hands a function ``fn(cell, cell_dir) -> dict of
results`` to :class:`SweepRunner`, together with ``settings``: everything else that changes a
cell's result (steps, model sizes, data, sample counts, ...: the resolved configuration minus what
only selects which cells exist or how they run, such as the lists of seeds, the device, the number
of workers, progress bars and the output folder).

A cell's folder is ``cells/<readable id>-<hash>``, the hash (:func:`settings_key`) taken over the
cell's parameters and ``settings``, and ``settings.json`` in it records both. So a rerun into the
same folder with the same settings skips finished cells (``result.json``) and resumes an
interrupted one from the Trainer checkpoint it left, while a rerun with other settings computes
new cells beside the old ones and never returns their results. ``results.csv`` holds exactly the
finished cells of the current call in the grid's order, rewritten after every cell, so a run
killed and restarted, or run in parallel, produces the same file as an uninterrupted serial one.

Cells are independent, so they can run at once (``workers``, ``launcher``):

* ``launcher="local"``, ``workers > 1``: a ``concurrent.futures.ProcessPoolExecutor`` of worker
  processes, each with one torch / OpenMP thread, started by ``forkserver`` (``fork`` hangs GNU
  OpenMP in a child that uses more than one thread after the parent did, and cannot use CUDA once
  the parent has; ``spawn`` re-imports torch in every worker). The cell function travels to each
  worker once, so it must pickle (a module-level function, a ``functools.partial`` of one, or a
  method of a picklable object) and per-process caches it keeps (a tokenizer, a trained model)
  live for the worker's life. ``workers=1`` runs the cells one by one in this process.
* ``launcher="submitit"``: one job per cell (or group) through ``submitit.AutoExecutor``: SLURM
  where ``sbatch`` is found (``slurm_array_parallelism = workers``), else local processes; the
  output folder must be on a file system the jobs see.

What a sweep shows: one bar over the cells (``desc``), with the running cells' ids (and the step of
the Trainer fitting in each) beside it and an ETA from the cells finished in this call (cells cached
by an earlier run count as done, not in the rate); the per-cell bars (the Trainer's, and any loop
drawn with ``latentar.train.reporting.progress_bar``) only with ``verbose`` (``--verbose``), in this
process and in workers alike. With ``wandb`` (``--wandb``) each cell run now is one Weights & Biases
run: project ``--wandb-project``, group the output folder's name, name the cell id, config the
cell's parameters and settings; it gets the Trainer's logged scalars and the cell's result row.
Neither changes a result, so neither keys the cells. See ``latentar.train.reporting``.

Each cell seeds itself, so results do not depend on the launcher or on which cells run together
(bit for bit when the serial run also uses one thread, e.g. ``OMP_NUM_THREADS=1``). Ctrl-C or
SIGTERM stops the workers (a Trainer saves its checkpoint first), keeps every finished cell, and
a rerun resumes. A cell's exception is raised again in this process, with the cell's id in its
notes and the worker's traceback as its cause.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latentar.cliargs import UsageError, parse_list, positive_int  # noqa: F401  (parse_list re-exported)

# No torch at import: the sweep commands' parsers import this module (add_launch_args). So
# latentar.train (checkpoint, reporting) loads on first use, and markdown_table / write_table,
# re-exported for the sweeps from latentar.metrics.plots, through the module __getattr__ below.

RESULT_NAME = "result.json"
SETTINGS_NAME = "settings.json"
LAUNCHERS = ("local", "submitit")
STOP_TIMEOUT_S = 60.0   # after Ctrl-C: how long workers get to finish their step and checkpoint
TICK_S = 1.0            # the sweep bar's refresh period on a terminal (its clock moves during long cells)
TICK_S_NOT_TTY = 30.0   # ... and into a file or pipe, where every refresh is one more line
WANDB_PROJECT = "latentar"
WANDB_MISSING = "--wandb needs the wandb package: pip install wandb"


def __getattr__(name: str) -> Any:
    if name in ("markdown_table", "write_table"):
        from latentar.metrics import plots
        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cell_id(cell: dict[str, Any]) -> str:
    """A readable, filesystem-safe id from a cell's parameters, in their given order."""
    parts = [f"{k}={v}" for k, v in cell.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", ",".join(parts))


def settings_key(*parts: Any, length: int = 10) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (dict keys sorted; ``0`` and ``0.0`` differ,
    so callers pass resolved, typed values): equal settings give equal keys across processes."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity mask, e.g. a SLURM allocation), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _write_json_atomic(path: Path, obj: Any) -> str:
    from latentar.train.checkpoint import atomic_write_text
    text = json.dumps(obj, indent=2, default=float)  # key order kept: CSV columns stay stable
    atomic_write_text(text, path)
    return text


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    write = globals().get("write_table") or __getattr__("write_table")  # a test may patch runner.write_table
    write(path, rows)


# --------------------------------------------------------------------------------------------------
# One cell, wherever it runs (this process, a worker, a submitit job)
# --------------------------------------------------------------------------------------------------
class CellInterrupted(KeyboardInterrupt):
    """A cell stopped by Ctrl-C / SIGTERM in a worker; ``step`` and ``checkpoint`` are its Trainer's,
    if it was training (a picklable stand-in for ``TrainingInterrupted``)."""

    def __init__(self, cell: str, step: int | None = None, checkpoint: str | None = None):
        super().__init__(f"sweep cell {cell} interrupted" + (f" at step {step}" if step is not None else "")
                         + (f"; checkpoint saved to {checkpoint}" if checkpoint else ""))
        self.cell, self.step, self.checkpoint = cell, step, checkpoint

    def __reduce__(self):
        return type(self), (self.cell, self.step, self.checkpoint)


@dataclass(frozen=True)
class CellOptions:
    """How a cell reports, wherever it runs (picklable): ``verbose`` shows its own progress bars;
    ``wandb``: ``None``, or the ``wandb.init`` options (project, group, dir) of its W&B run."""
    verbose: bool = False
    wandb: dict[str, Any] | None = None


Status = Callable[[str, str], None]   # status(cell id, text): a running cell's line in the sweep's bar


def _run_cell(fn: Callable, cell: dict[str, Any], d: Path, settings: dict[str, Any],
              opts: CellOptions = CellOptions(), status: Status | None = None) -> dict[str, Any]:
    """Run one cell into ``d`` (inside ``latentar.train.reporting.cell_context``: its bars, status line
    and W&B run) and save its result; return it as read back from ``result.json`` (so fresh,
    reloaded and remote results are the same values)."""
    from latentar.train.reporting import cell_context, log_result
    d.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(d / SETTINGS_NAME, {"cell": cell, "settings": settings})
    name = cell_id(cell)
    say = None if status is None else functools.partial(status, name)
    if say is not None:
        say("")  # running now
    t0 = time.perf_counter()
    try:
        with cell_context(name, opts.verbose, say, opts.wandb, config={**settings, **cell}):
            result = dict(fn(cell, d))
            result.setdefault("seconds", time.perf_counter() - t0)
            row = json.loads(_write_json_atomic(d / RESULT_NAME, result))
            log_result(row)
    except BaseException as e:
        if hasattr(e, "add_note"):
            e.add_note(f"in sweep cell {name} ({d})")
        raise
    return row


def _portable(e: BaseException, cell: dict[str, Any]) -> BaseException:
    """``e`` if it survives pickling (to travel back to the main process), else a stand-in naming it."""
    if isinstance(e, KeyboardInterrupt):
        ckpt = getattr(e, "checkpoint", None)
        return CellInterrupted(cell_id(cell), getattr(e, "step", None), None if ckpt is None else str(ckpt))
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to pickle
        import traceback
        return RuntimeError(f"sweep cell {cell_id(cell)} failed: {type(e).__name__}: {e}\n"
                            + "".join(traceback.format_exception(e)))


def _run_task(fn: Callable, items: list[tuple[dict[str, Any], str]], settings: dict[str, Any],
              opts: CellOptions = CellOptions(), status: Status | None = None) -> list[dict[str, Any]]:
    """A worker's task: one group's cells, in order; an error leaves as a picklable exception."""
    out = []
    for cell, d in items:
        try:
            out.append(_run_cell(fn, cell, Path(d), settings, opts, status))
        except BaseException as e:
            raise _portable(e, cell) from None
    return out


_WORKER_FN: Callable | None = None
_WORKER_STATUS: Any = None   # the queue of (pid, cell id, text) to the main process's bar, if it shows one


def _init_worker(fn: Callable, status_queue: Any = None) -> None:
    """Worker start: one torch thread, Ctrl-C left to the main process (it stops the workers), a
    SIGTERM if the main process dies (Linux), the cell function, unpickled once, and the queue its
    cells' status lines go to."""
    global _WORKER_FN, _WORKER_STATUS
    import torch
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    _WORKER_FN, _WORKER_STATUS = fn, status_queue


def _queue_status(name: str, text: str) -> None:
    _WORKER_STATUS.put((os.getpid(), name, text))


def _pool_task(items: list[tuple[dict[str, Any], str]], settings: dict[str, Any],
               opts: CellOptions = CellOptions()) -> list[dict[str, Any]]:
    return _run_task(_WORKER_FN, items, settings, opts, _queue_status if _WORKER_STATUS is not None else None)


def _submitit_task(fn: Callable, items: list[tuple[dict[str, Any], str]], settings: dict[str, Any],
                   parent_pid: int, opts: CellOptions = CellOptions()) -> tuple[str, Any]:
    """A submitit job: ("ok", results) or ("error", exception), so the exception comes back as raised."""
    if os.getpid() != parent_pid:  # a job process, not submitit's in-process debug mode
        import torch
        torch.set_num_threads(1)
    try:
        return "ok", _run_task(fn, items, settings, opts)
    except BaseException as e:  # noqa: BLE001 - returned, raised again by the main process
        return "error", e


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in this process for the block (unless someone handles it already)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _module_of(fn: Callable) -> str | None:
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__module__", None) or type(fn).__module__
    return None if name in (None, "__main__", "builtins") else name


# --------------------------------------------------------------------------------------------------
# The sweep's bar
# --------------------------------------------------------------------------------------------------
class _SweepBar:
    """The sweep's one bar: cells finished of all (those an earlier run finished count from the start,
    so the rate and the ETA are those of the cells run now), and as its postfix the running cells'
    ids, each with its status line (the step of the Trainer fitting in it). A thread refreshes it
    every TICK_S (TICK_S_NOT_TTY into a file), so its clock moves during long cells, and reads the
    status lines of worker processes from ``queue`` (``(pid, cell id, text)``) when one is set."""

    def __init__(self, total: int, done: int, desc: str, enabled: bool):
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=done, desc=desc, disable=not enabled, dynamic_ncols=True,
                        unit="cell", smoothing=0)
        self.running: dict[Any, tuple[str, str]] = {}  # who (0, or a worker's pid) -> (cell id, status)
        self.note = ""                                    # shown while no cell reports, e.g. "4 workers"
        self.finished: set[str] = set()                   # a worker's late status line must not revive its cell
        self.queue: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled:
            tty = False
            with contextlib.suppress(Exception):
                tty = bool(self.bar.fp.isatty())
            self._thread = threading.Thread(target=self._tick, args=(TICK_S if tty else TICK_S_NOT_TTY,),
                                            name="sweep-bar", daemon=True)
            self._thread.start()

    def _postfix(self) -> str:
        parts = [name[:60] + (f" [{text}]" if text else "") for name, text in self.running.values()]
        if not parts:
            return self.note
        return (f"{len(parts)} running: " if len(parts) > 1 else "") + "; ".join(parts)

    def status(self, who: Any, name: str, text: str) -> None:
        """Cell ``name`` runs in ``who`` and reports ``text``; shown at once when a cell starts, else at the next tick."""
        with self._lock:
            if name in self.finished:
                return
            new = self.running.get(who, (None,))[0] != name
            self.running[who] = (name, text)
            self.note = ""  # e.g. "4 workers starting": they have
            self.bar.set_postfix_str(self._postfix(), refresh=new)

    def set_note(self, note: str) -> None:
        with self._lock:
            self.note = note
            self.bar.set_postfix_str(self._postfix())

    def reporter(self) -> Status | None:
        """The status function of cells run in this process (``None`` when the bar is off)."""
        return functools.partial(self.status, 0) if self.enabled else None

    def done(self, names: Sequence[str], n: int) -> None:
        with self._lock:
            self.finished.update(names)
            self.running = {k: v for k, v in self.running.items() if v[0] not in self.finished}
            self.bar.set_postfix_str(self._postfix(), refresh=False)
            self.bar.update(n)
            self.bar.refresh()

    def _drain(self) -> None:
        q = self.queue
        with contextlib.suppress(Exception):  # the queue goes when the pool does
            while q is not None and not q.empty():
                self.status(*q.get())

    def _tick(self, every: float) -> None:
        last = time.monotonic()
        while not self._stop.wait(min(every, TICK_S)):
            self._drain()
            if time.monotonic() - last >= every:
                last = time.monotonic()
                with self._lock:
                    self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.queue = None
        self.bar.close()


# --------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------
class SweepRunner:
    """Runs cells into ``out_dir/cells/``; ``settings`` (JSON-serialisable) is what, besides a cell's
    parameters, changes its result: it is part of every cell's folder name (see the module docstring).

    ``workers``: cells run at once (``None``: the CPU cores; never more than there are cells to run);
    ``launcher``: ``"local"`` (worker processes, or this process when ``workers`` is 1) or
    ``"submitit"`` (``submitit``: options for ``submitit.AutoExecutor``: ``folder`` (default
    ``out_dir/submitit``), ``cluster`` (default: detected; ``"local"`` / ``"debug"`` for tests) and
    any of its parameters, e.g. ``timeout_min``, ``slurm_partition``); ``start_method``: how local
    workers start (``forkserver``; ``spawn``; ``fork`` only for CPU-only, one-thread cells).

    ``progress``: the sweep's one bar (cells, the running ones, ETA); ``verbose``: each cell's own
    bars too (the Trainer's, ...; ``latentar.train.reporting.show_bars``); ``wandb``: ``True`` or a
    dict of ``wandb.init`` options (``project``, default ``$WANDB_PROJECT`` else ``latentar``;
    ``group``, default the output folder's name; ``dir``, default ``out_dir``) to make every cell
    run now a W&B run with the Trainer's scalars and the result row. None of them changes a result.
    """

    def __init__(self, out_dir: str | os.PathLike, progress: bool = True, settings: dict[str, Any] | None = None,
                 workers: int | None = 1, launcher: str = "local", submitit: dict[str, Any] | None = None,
                 start_method: str = "forkserver", verbose: bool = False, wandb: bool | dict[str, Any] | None = None):
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        if workers is not None:
            workers = positive_int(workers, "workers")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"start_method {start_method!r} is not available here; "
                             f"use one of {multiprocessing.get_all_start_methods()}")
        self.wandb = None if wandb is None or wandb is False else ({} if wandb is True else dict(wandb))
        if self.wandb is not None:
            from latentar.train.reporting import import_wandb
            import_wandb()  # an ImportError saying what to install, before any cell runs
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.settings = dict(settings or {})
        self.workers, self.launcher, self.start_method = workers, launcher, start_method
        self.submitit = dict(submitit or {})
        self.verbose = bool(verbose)

    def cell_options(self) -> CellOptions:
        """What every cell of this runner gets: ``verbose`` and its W&B run's ``wandb.init`` options."""
        wandb = None
        if self.wandb is not None:
            out = self.out_dir.resolve()
            wandb = {"project": os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, "group": out.name or "sweep",
                     "dir": str(out), **self.wandb}
        return CellOptions(self.verbose, wandb)

    def cell_dir(self, cell: dict[str, Any]) -> Path:
        return self.out_dir / "cells" / f"{cell_id(cell)}-{settings_key(cell, self.settings)}"

    def run(self, cells: Iterable[dict[str, Any]], fn: Callable[[dict[str, Any], Path], dict[str, Any]],
            desc: str = "cells", group: Callable[[dict[str, Any]], Any] | None = None) -> list[dict[str, Any]]:
        """Run every unfinished cell; return one row per cell (parameters, then results), in cell order.

        ``group(cell)``: cells with equal keys run one after another in one worker, in cell order
        (for cells sharing something costly that ``fn`` builds and keeps, such as a trained model)."""
        cells = list(cells)
        ids = [cell_id(c) for c in cells]
        if len(set(ids)) != len(ids):
            raise ValueError("the sweep has duplicate cells; check for repeated values in the options")
        dirs = [self.cell_dir(c) for c in cells]
        results: dict[int, dict[str, Any]] = {i: json.loads((d / RESULT_NAME).read_text())
                                              for i, d in enumerate(dirs) if (d / RESULT_NAME).exists()}
        tasks: dict[Any, list[int]] = {}
        for i, c in enumerate(cells):
            if i not in results:
                tasks.setdefault(group(c) if group is not None else i, []).append(i)
        workers = min(self.workers or cpu_cores(), max(1, len(tasks)))
        opts = self.cell_options()
        bar = _SweepBar(len(cells), len(results), desc, self.progress)

        def finished(indices: list[int], rows: list[dict[str, Any]]) -> None:
            results.update(zip(indices, rows))
            _write_table(self.out_dir / "results.csv", [{**cells[i], **results[i]} for i in sorted(results)])
            bar.done([ids[i] for i in indices], len(rows))

        try:
            if results:
                finished([], [])
            if not tasks:
                pass  # every cell finished before
            elif self.launcher == "submitit":
                bar.set_note(f"{len(tasks)} submitit jobs")
                self._run_submitit(cells, dirs, fn, list(tasks.values()), workers, finished, opts)
            elif workers > 1:
                self._run_pool(cells, dirs, fn, list(tasks.values()), workers, finished, bar, opts)
            else:
                status = bar.reporter()
                for i in sorted(i for t in tasks.values() for i in t):
                    finished([i], [_run_cell(fn, cells[i], dirs[i], self.settings, opts, status)])
        finally:
            bar.close()
        return [{**c, **results[i]} for i, c in enumerate(cells)]

    # -- local worker processes -------------------------------------------------------------------
    def _run_pool(self, cells, dirs, fn, tasks, workers, finished, bar, opts) -> None:
        try:
            pickle.dumps(fn)
        except Exception as e:  # noqa: BLE001 - any pickling failure
            raise TypeError(f"workers > 1 need a picklable cell function, and {fn!r} is not ({e}); use a "
                            "module-level function, a functools.partial of one or a method of a picklable "
                            "object, or run with one worker") from e
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":  # the server imports these once; workers fork from it
            ctx.set_forkserver_preload([m for m in ("torch", _module_of(fn)) if m])
        bar.set_note(f"{workers} workers starting")
        bar.queue = ctx.SimpleQueue() if bar.enabled else None  # the workers' cell ids and status lines
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(fn, bar.queue))
        with _sigterm_as_interrupt():
            pending: dict = {}
            try:
                for t in tasks:
                    pending[pool.submit(_pool_task, [(cells[i], str(dirs[i])) for i in t], self.settings, opts)] = t
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=lambda f: pending[f][0]):
                        finished(pending.pop(fut), fut.result())  # a cell's error is raised here
            except BaseException:
                self._stop_pool(pool)
                for fut, t in pending.items():  # cells that finished while the others stopped
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        finished(t, fut.result())
                raise
            pool.shutdown()

    @staticmethod
    def _stop_pool(pool: ProcessPoolExecutor) -> None:
        """Cancel queued cells, SIGTERM the running ones (a Trainer saves its checkpoint and stops; other
        code stops at once), and wait up to STOP_TIMEOUT_S for the workers before killing them."""
        procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython keeps them there
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)

    # -- submitit ---------------------------------------------------------------------------------
    def _run_submitit(self, cells, dirs, fn, tasks, workers, finished, cell_opts) -> None:
        try:
            import submitit
        except ImportError as e:
            raise UsageError("--launcher submitit needs the submitit package: pip install submitit") from e
        opts = dict(self.submitit)
        folder = Path(opts.pop("folder", self.out_dir / "submitit"))
        ex = submitit.AutoExecutor(folder=folder, cluster=opts.pop("cluster", None))
        params = {"timeout_min": 240, "cpus_per_task": 1, "name": self.out_dir.name or "sweep", **opts}
        if ex.cluster == "slurm":
            params.setdefault("slurm_array_parallelism", workers)
        ex.update_parameters(**params)
        with ex.batch():
            jobs = [ex.submit(_submitit_task, fn, [(cells[i], str(dirs[i])) for i in t], self.settings, os.getpid(),
                              cell_opts) for t in tasks]
        by_job = {id(j): t for j, t in zip(jobs, tasks)}
        poll = 0.2 if ex.cluster in ("local", "debug") else 15.0
        with _sigterm_as_interrupt():
            try:
                for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
                    outcome, value = job.result()
                    if outcome == "error":
                        raise value
                    finished(by_job[id(job)], value)
            except BaseException:
                for j in jobs:  # local: SIGINT, SLURM: scancel (SIGTERM): a Trainer checkpoints and stops
                    if not j.done():
                        with contextlib.suppress(Exception):
                            j.cancel(check=False)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while ex.cluster == "local" and time.monotonic() < deadline and not all(j.done() for j in jobs):
                    time.sleep(0.2)
                raise


# --------------------------------------------------------------------------------------------------
# Command line: the launch options every sweep command shares
# --------------------------------------------------------------------------------------------------
def add_launch_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--workers``, ``--launcher``, ``--slurm-partition``, ``--slurm-time`` and the reporting options
    ``--verbose``, ``--wandb``, ``--wandb-project`` to a sweep's parser."""
    g = parser.add_argument_group("parallel cells")
    g.add_argument("--workers", type=int, default=None,
                   help="cells run at once, each in its own process with one thread (default: the CPU cores, at "
                        "most one per cell; 1 runs the cells one by one in this process). Results do not depend on it")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: worker processes on this machine (default); submitit: one job per cell through "
                        "submitit, on SLURM when sbatch is found (at most --workers at once), else local processes")
    g.add_argument("--slurm-partition", default=None, help="--launcher submitit: the SLURM partition of the jobs")
    g.add_argument("--slurm-time", type=int, default=None,
                   help="--launcher submitit: time limit of each job in minutes (default 240)")
    g = parser.add_argument_group("progress and logging")
    g.add_argument("--verbose", action="store_true",
                   help="also draw each cell's own progress bars (training steps, ...), in worker processes too, "
                        "where they interleave (default: one bar over the cells, naming the running ones with their "
                        "training step, and an ETA from the cells run now)")
    g.add_argument("--wandb", action="store_true",
                   help="log every cell run now to Weights & Biases (pip install wandb; wandb login, or "
                        "WANDB_MODE=offline): one run per cell, named by its id, grouped by the output folder, with "
                        "the cell's settings as config, the training scalars and the result row")
    g.add_argument("--wandb-project", default=None, metavar="NAME",
                   help=f"--wandb: the W&B project (default $WANDB_PROJECT, else {WANDB_PROJECT})")
    return parser


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``SweepRunner`` keyword arguments (workers, launcher, submitit, verbose, wandb) from parsed
    launch options, or a UsageError naming the bad one. ``wandb`` is imported only with ``--wandb``."""
    workers = None if args.workers is None else positive_int(args.workers, "--workers")
    opts: dict[str, Any] = {}
    if args.slurm_partition is not None:
        opts["slurm_partition"] = args.slurm_partition
    if args.slurm_time is not None:
        opts["timeout_min"] = positive_int(args.slurm_time, "--slurm-time")
    if opts and args.launcher != "submitit":
        raise UsageError("--slurm-partition / --slurm-time need --launcher submitit")
    if args.launcher == "submitit":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UsageError("--launcher submitit needs the submitit package: pip install submitit") from None
    project = getattr(args, "wandb_project", None)
    wandb = None
    if getattr(args, "wandb", False):
        try:
            import wandb as _  # noqa: F401
        except ImportError:
            raise UsageError(WANDB_MISSING) from None
        wandb = {} if project is None else {"project": project}
    elif project is not None:
        raise UsageError("--wandb-project needs --wandb")
    return {"workers": workers, "launcher": args.launcher, "submitit": opts,
            "verbose": bool(getattr(args, "verbose", False)), "wandb": wandb}


def aggregate(rows: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of ``metrics`` over rows sharing the ``by`` values (seeds)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(rs)
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) is not None and not math.isnan(float(r[m]))]
            row[f"{m}_mean"] = statistics.fmean(vals) if vals else float("nan")
            row[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    return out
