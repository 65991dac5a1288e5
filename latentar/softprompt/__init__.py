"""Soft prompts for a frozen discrete LM: exact reconstruction under greedy decoding, and the remedies for loops.

* :class:`SoftPrompt` (``prompt.py``): n learnable vectors prepended to a frozen LM's input embeddings;
  the LM never changes (checked after every fit).
* :func:`fit_soft_prompt` (``fit.py``): one text per prompt, AdamW (Kuratov et al. settings), stop at
  exact greedy reconstruction; :func:`fit_soft_prompts`: B such fits as one batch (one LM pass per
  step; :class:`PromptRows` puts a different prompt before each row).
* Objectives (``objectives.py``): ``ce``, ``ss`` (``latentar.exposure.ScheduledSampling``), ``ul``
  (unlikelihood), ``rl`` (REINFORCE/MIXER with a baseline), ``pf`` (professor forcing), combined as
  ``"ce+ul*0.5"``.
* Decoding (``decoding.py``): greedy, sampling, beam search, n-gram blocking, repetition penalty, one KV cache.
* Report (``report.py``) and benchmark (``bench.py``); commands ``latentar softprompt fit|bench`` (``cli.py``).
* Frozen LMs (``backend.py``): CharLM, any transformers causal LM, SmolLM2-135M-Instruct;
  ``text_charlm`` (``pretrained_charlm.py``) is a small CharLM pretrained on the stdlib corpus.
"""
from latentar.softprompt.backend import CharLMBackend, FrozenLM, HFBackend, as_frozen_lm, load_frozen_lm
from latentar.softprompt.decoding import beam_search, decode, greedy, sample
from latentar.softprompt.fit import FitResult, fit_soft_prompt, fit_soft_prompts
from latentar.softprompt.objectives import (Combination, CrossEntropy, Objective, ProfessorForcing, Reinforce,
                                            ScheduledSamplingObjective, StepContext, Term, Unlikelihood,
                                            make_objective, prefix_reward, reinforce_loss, unlikelihood_loss)
from latentar.softprompt.prompt import PromptRows, SoftPrompt
from latentar.softprompt.report import ReconstructionReport, detect_loop, reconstruction_report, report_fit
from latentar.softprompt.pretrained_charlm import text_charlm

__all__ = [
    "SoftPrompt", "PromptRows", "fit_soft_prompt", "fit_soft_prompts", "FitResult",
    "FrozenLM", "CharLMBackend", "HFBackend", "as_frozen_lm", "load_frozen_lm", "text_charlm",
    "Objective", "CrossEntropy", "ScheduledSamplingObjective", "Unlikelihood", "Reinforce", "ProfessorForcing",
    "Combination", "Term", "StepContext", "make_objective", "unlikelihood_loss", "reinforce_loss", "prefix_reward",
    "greedy", "sample", "beam_search", "decode",
    "ReconstructionReport", "reconstruction_report", "report_fit", "detect_loop",
]
