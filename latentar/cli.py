"""The ``latentar`` console entry: a front door that dispatches to library modules.

Each command lives beside the code it drives and exposes ``main(argv) -> int``; this file only
maps command words onto those modules (imported lazily, so ``latentar --help`` is instant).
"""
from __future__ import annotations

import importlib
import sys

# command words -> (module with main(argv), one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("sweep", "variance"): ("latentar.sweeps.variance", "the flagship tokenizer-variance sweep (FD vs C_sigma)"),
    ("sweep", "ip"): ("latentar.sweeps.ip", "input-perturbation diffusion: FD vs sampling steps per gamma"),
    ("compare", "discrete"): ("latentar.sweeps.discrete", "SFT vs SS vs BASH vs RAC on seq2seq tasks"),
    ("demo", "huszar"): ("latentar.exposure.huszar", "teacher forcing vs annealed SS vs context noise on a length-2 toy"),
    ("softprompt", "fit"): ("latentar.softprompt.cli", "fit a soft prompt to one text and decode it"),
    ("softprompt", "bench"): ("latentar.softprompt.cli", "exact-reconstruction rate against target length"),
}


def _usage() -> str:
    width = max(len(" ".join(k)) for k in COMMANDS)
    rows = "\n".join(f"  {' '.join(k):<{width}}  {h}" for k, (_, h) in COMMANDS.items())
    return f"usage: latentar <command> [options]\n\ncommands:\n{rows}\n\n`latentar <command> --help` documents each command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            module = importlib.import_module(COMMANDS[key][0])
            return int(module.main(argv[n:], command=" ".join(key)) or 0)
    print(f"latentar: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
