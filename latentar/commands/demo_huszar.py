"""``latentar demo huszar``'s command line, without torch (the demo itself: :mod:`latentar.demos.huszar`,
whose docstring ``--help`` prints)."""
from __future__ import annotations

import argparse

from latentar.cliargs import ArgumentParser, UsageError, add_common_args, check_device, finite, positive_int
from latentar.commands import module_docstring, run_command_line


def build_parser(command: str = "demo huszar") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"latentar {command}", description=module_docstring(
        "latentar.demos.huszar", "teacher forcing vs annealed scheduled sampling vs context noise on a length-2 toy"))
    p.add_argument("--steps", type=int, default=400, help="optimizer steps per strategy (>= 1)")
    p.add_argument("--symbols", type=int, default=4, help="K, the number of symbols (>= 2)")
    p.add_argument("--p-equal", type=float, default=0.9, help="P(x2 = x1), in [0, 1]")
    p.add_argument("--sigma", type=float, default=0.5, help="ContextNoise sigma (embedding-std units, >= 0)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="sequences per optimizer step, the same for every strategy (>= 1)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate of every strategy's optimizer (> 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data and of every strategy's initial model (>= 0)")
    p.add_argument("--device", default="cpu", help="cpu (the toy is fastest there), auto, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    return add_common_args(p)


def check(args: argparse.Namespace) -> None:
    """A UsageError naming the first bad option, before anything trains."""
    positive_int(args.steps, "--steps")
    positive_int(args.symbols, "--symbols", minimum=2)
    if not 0.0 <= finite(args.p_equal, "--p-equal") <= 1.0:
        raise UsageError(f"--p-equal must lie in [0, 1], got {args.p_equal!r}")
    finite(args.sigma, "--sigma", minimum=0.0)
    positive_int(args.batch_size, "--batch-size")
    finite(args.lr, "--lr", minimum=0.0, strict=True)
    positive_int(args.seed, "--seed", minimum=0)
    check_device(args.device)


def main(argv: list[str] | None = None, command: str = "demo huszar") -> int:
    def resolve(args):
        check(args)
        return None
    return run_command_line(argv, command, build_parser, "latentar.demos.huszar:run_cli", resolve)
