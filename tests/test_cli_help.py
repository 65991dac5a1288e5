"""`latentar <command> --help`: it imports no torch (nor diffusers, transformers, matplotlib), states
every option's default, and gives every option a line of help; `--threads` reaches torch, the
environment and the processes a command starts."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentar import cli
from latentar.cliargs import FROM_PRESET, HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "matplotlib")

_HELP = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
from latentar import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = cli.main(sys.argv[1:] + ["--help"])
    except SystemExit as e:
        rc = e.code
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "help": out.getvalue(),
                  "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    env.pop("LATENTAR_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def helps():
    """Every command's --help, each in a fresh interpreter, one after the other (for the times)."""
    out = {}
    for words in cli.COMMANDS:
        r = subprocess.run([sys.executable, "-c", _HELP, *words], env=_env(), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        out[words] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_help_imports_no_heavy_library_and_exits_0(helps, capsys):
    lines = []
    for words, r in helps.items():
        assert r["rc"] == 0, words
        assert r["help"].startswith(f"usage: latentar {' '.join(words)}"), r["help"][:200]
        assert r["heavy"] == [], f"latentar {' '.join(words)} --help imported {r['heavy']}"
        lines.append(f"  latentar {' '.join(words):<17} --help: {r['seconds']:.2f} s (cli.main in-process, after "
                     "interpreter start)")
    with capsys.disabled():   # the measured times, for the record (not asserted: machines differ)
        print("\n" + "\n".join(lines))


MINE = [w for w, (module, _) in cli.COMMANDS.items() if module.startswith("latentar.commands.")]


def _parser(words):
    import importlib
    module = importlib.import_module(cli.COMMANDS[words][0])
    command = " ".join(words)
    if module.__name__.endswith(("compare_discrete", "compare_text")):
        return module.build_parser(f"latentar {command}")
    return module.build_parser(command)


@pytest.mark.parametrize("words", MINE, ids=[" ".join(w) for w in MINE])
def test_every_option_has_help_and_a_stated_default(words, helps):
    parser, text = _parser(words), helps[words]["help"]
    assert "(default: None)" not in text
    assert "default: the preset's" not in text
    fmt = HelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        for opt in action.option_strings:
            assert opt in text
        shown = fmt._get_help_string(action)
        if action.default is not None and not isinstance(action.default, bool):
            assert "(default" in shown, f"{action.option_strings}: {shown!r} states no default"
    assert "--threads" in text


def test_hand_written_defaults_are_gone_and_presets_say_so(helps):
    ip = {a.option_strings[0]: a for a in _parser(("sweep", "ip"))._actions}
    for opt in ("--gamma", "--steps", "--seeds", "--train-steps", "--samples"):   # set by the preset
        assert ip[opt].default is None and ip[opt].help.endswith(FROM_PRESET), opt
    assert " ".join(helps[("sweep", "ip")]["help"].split()).count(FROM_PRESET) == 5
    variance = helps[("sweep", "variance")]["help"]
    for stale in ("(default sigma_vae)", "(default ddpm)", "(default digits)", "(default auto)", "(default runs/sweep)",
                  "(0.5)"):
        assert stale not in variance
    flat = " ".join(variance.split())
    assert "(default: 0.5)" in flat and "(default: digits)" in flat
    huszar = " ".join(helps[("demo", "huszar")]["help"].split())
    for default in ("(default: 256)", "(default: 0.01)", "(default: 0)", "(default: 400)"):
        assert default in huszar
    # the module docstring keeps its layout (RawDescriptionHelpFormatter): its command example on its own line
    assert "\n    latentar sweep variance --preset quick --data digits --out runs/sweep\n" in variance


def test_softprompt_fit_and_bench_have_their_own_descriptions(helps):
    fit, bench = helps[("softprompt", "fit")]["help"], helps[("softprompt", "bench")]["help"]
    desc = lambda text: text.split("\n\n")[1]  # noqa: E731 - the paragraph after the usage block
    assert desc(fit) != desc(bench)
    assert "Fit a soft prompt" in fit and "softprompt bench" not in desc(fit)
    assert "Exact-reconstruction rate" in bench and "results.csv" in bench
    for opt, default in (("--num-beams", "4"), ("--max-steps", "2000"), ("--seed", "0")):
        line = " ".join(fit.split(opt, 2)[-1].split("\n  -")[0].split())
        assert f"(default: {default})" in line, line


# --------------------------------------------------------------------------------------------------
# --threads
# --------------------------------------------------------------------------------------------------
_THREADS = """
import json, multiprocessing as mp, os, subprocess, sys
import torch
from latentar.commands import compare_discrete
compare_discrete.build_parser().parse_args(sys.argv[1:])
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"],
                       capture_output=True, text=True).stdout.split()
with mp.get_context("forkserver").Pool(1) as pool:   # how sweep workers start
    worker = pool.apply(os.getenv, ("OMP_NUM_THREADS",))
print(json.dumps({"torch": torch.get_num_threads(), "env": [os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]],
                  "child": child, "worker": worker}))
"""


@pytest.mark.parametrize("argv, n", [(["--threads", "3"], 3), ([], 1)])
def test_threads_reach_torch_the_environment_and_workers(argv, n):
    """torch.get_num_threads() is N right after parsing (torch imported before), whatever the shell set
    (OMP_NUM_THREADS=4 here); the variables reach a subprocess and a forkserver worker."""
    r = subprocess.run([sys.executable, "-c", _THREADS, *argv], env=_env(OMP_NUM_THREADS="4", MKL_NUM_THREADS="4"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"torch": n, "env": [str(n)] * 2, "child": [str(n)] * 2, "worker": str(n)}


_RUN = """
import json, sys
from latentar import cli
assert "torch" not in sys.modules
rc = cli.main(sys.argv[1:])
import torch
print(json.dumps({"rc": rc, "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}))
"""


def test_a_command_sets_torch_threads_before_it_runs():
    """torch imported only after parsing: the command sets its intra- and inter-op threads before running."""
    r = subprocess.run([sys.executable, "-c", _RUN, "demo", "huszar", "--steps", "1", "--json", "--threads", "2"],
                       env=_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"rc": 0, "threads": 2, "interop": 2}


def test_bad_threads_is_a_usage_error(capsys):
    assert cli.main(["demo", "huszar", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar demo huszar: error: --threads must be an integer >= 1") and err.count("\n") == 1
