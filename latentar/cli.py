"""The ``latentar`` console entry: a front door that dispatches to library modules.

Each command's command line lives in a light module exposing ``main(argv, command=...) -> int``
(the sweeps, comparisons, demos and soft prompts: :mod:`latentar.commands`), which parses and
resolves the options without importing torch, so ``latentar <command> --help`` answers at once, and
only then imports the library module that runs the command. This file maps command words onto those
modules (imported lazily) and is the one place where failures meet people:

* a user mistake (:class:`latentar.cliargs.UsageError`, any ``ValueError``, a missing or misplaced
  file) prints ``latentar <command>: error: <message>`` and exits 2;
* Ctrl-C / SIGTERM during training prints ``latentar <command>: interrupted at step N, checkpoint
  saved; rerun the same command to resume`` and exits 130;
* ``--debug`` (anywhere on the line) or ``LATENTAR_DEBUG=1`` re-raises instead, with the traceback.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

# command words -> (a module with main(argv, command) that imports no torch before it runs, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("sweep", "variance"): ("latentar.commands.sweep_variance", "the flagship tokenizer-variance sweep (FD vs C_sigma)"),
    ("sweep", "ip"): ("latentar.commands.sweep_ip", "input-perturbation diffusion: FD vs sampling steps per gamma"),
    ("compare", "discrete"): ("latentar.commands.compare_discrete",
                              "SFT vs SS vs BASH vs RAC vs relabel, UL, MIXER on seq2seq tasks"),
    ("compare", "text"): ("latentar.commands.compare_text",
                          "long-form text: repetition, loops, own-prefix NLL per strategy"),
    ("demo", "huszar"): ("latentar.commands.demo_huszar",
                         "teacher forcing vs annealed SS vs context noise on a length-2 toy"),
    ("softprompt", "fit"): ("latentar.commands.softprompt", "fit a soft prompt to one text and decode it"),
    ("softprompt", "bench"): ("latentar.commands.softprompt", "exact-reconstruction rate against target length"),
    ("report",): ("latentar.report", "write RUN_DIR/index.html: settings, tables, verdicts, plots, samples, audio"),
}


def _usage() -> str:
    width = max(len(" ".join(k)) for k in COMMANDS)
    rows = "\n".join(f"  {' '.join(k):<{width}}  {h}" for k, (_, h) in COMMANDS.items())
    return (f"usage: latentar <command> [options]\n\ncommands:\n{rows}\n\n`latentar <command> --help` documents each "
            "command's options.\nThe sweep, compare, demo and softprompt commands take --threads N (torch / OpenMP "
            "threads, default 1);\nthe sweeps, comparisons and softprompt bench take --cfg-dump (print the resolved "
            "config, run nothing)\nand --config RUN_DIR/config.yaml (run a saved config again).")


# What counts as the user's mistake rather than a defect of latentar: bad option values and paths.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


def run_command(command: str, fn, argv: list[str], debug: bool = False) -> int:
    """Run ``fn(argv, command=command)`` (``command`` such as ``"sweep variance"``) with the shared
    error handling (see the module docstring)."""
    from latentar.cliargs import UsageError

    prog = f"latentar {command}"
    debug = debug or os.environ.get("LATENTAR_DEBUG", "") not in ("", "0")
    # SIGTERM outside a training loop (which installs its own handler: finish the step, save, stop)
    # is a Ctrl-C: the run stops at once with the one-line message below.
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(fn(argv, command=command) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt as e:  # TrainingInterrupted is a KeyboardInterrupt
        if debug:
            raise
        step = getattr(e, "step", None)
        where = f"interrupted at step {step}, checkpoint saved" if getattr(e, "checkpoint", None) else (
            f"interrupted at step {step}" if step is not None else "interrupted")
        print(f"{prog}: {where}; rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS + (UsageError,) as e:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            module = importlib.import_module(COMMANDS[key][0])
            return run_command(" ".join(key), module.main, argv[n:], debug=debug)
    print(f"latentar: error: unknown command {' '.join(argv[:2])!r}; `latentar --help` lists the commands",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
