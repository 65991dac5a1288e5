"""Synthetic seq2seq tasks over bytes: copy, reverse, sort, add, and the compounding tasks
running_sum, chain, add_lsd (``latentar.data.compounding``), with a controlled answer length.

Vocabulary (``VOCAB_SIZE = 260``): ids 0..255 are the raw bytes; then the special ids
``PAD = 256`` (padding, never in a loss), ``BOS = 257`` (optional start), ``SEP = 258`` (ends the
prompt), ``EOS = 259`` (ends the answer). A training sequence is packed as

    [BOS] prompt SEP answer EOS PAD ... PAD          (BOS only with add_bos=True)

padded to a fixed length per dataset so the default collate stacks it. Next-token training uses
``input_ids = tokens[:-1]``, ``target_ids = tokens[1:]``, and ``loss_mask`` (over targets) is True
exactly where the target is an answer byte or the final EOS.

Tasks (``length`` is the exact answer length in bytes, or in steps for the compounding tasks):
* ``copy``: prompt = ``length`` random symbols from ``alphabet``; answer = prompt.
* ``reverse``: answer = prompt reversed.
* ``sort``: answer = prompt's bytes in ascending order.
* ``add``: prompt = ``b"a+b"`` in decimal; answer = ``a + b``, a number with exactly ``length``
  digits (the sum is drawn first, then ``a`` uniformly in ``[0, sum]``); ``alphabet`` is unused.
* ``running_sum``, ``chain``, ``add_lsd``: ``length`` steps, each computed from the previous
  step's written value (see ``latentar.data.compounding``; ``alphabet`` is unused). Their datasets
  have a checker (:meth:`SeqTask.check`) and an expert (:meth:`SeqTask.expert_targets`).

In every task, one dataset's answers and prompts have one length (``max_answer_len``,
``max_prompt_len``), except ``add``'s prompts.

Splits never overlap: an example belongs to the held-out split iff a hash of (task, prompt) falls
in the ``test_fraction`` bucket; each split rejection-samples prompts from its own bucket. Item
``i`` is drawn from a ``random.Random`` seeded by (task, length, seed, split, i), so a dataset is
deterministic, costs nothing to construct, and any item can be recomputed alone.
"""
from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from latentar.data.compounding import COMPOUNDING

NUM_BYTES = 256
PAD, BOS, SEP, EOS = 256, 257, 258, 259
VOCAB_SIZE = 260
SPECIAL_IDS = {"PAD": PAD, "BOS": BOS, "SEP": SEP, "EOS": EOS}
TASKS = ("copy", "reverse", "sort", "add", *COMPOUNDING)
SPLITS = ("train", "test")
_MAX_TRIES = 10_000


def solve(task: str, prompt: bytes) -> bytes:
    """The correct answer to ``prompt`` for ``task`` (the reference every item is checked against)."""
    if task == "copy":
        return bytes(prompt)
    if task == "reverse":
        return bytes(prompt[::-1])
    if task == "sort":
        return bytes(sorted(prompt))
    if task == "add":
        a, b = prompt.split(b"+")
        return str(int(a) + int(b)).encode()
    if task in COMPOUNDING:
        return COMPOUNDING[task].solve(prompt)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def in_test_split(task: str, prompt: bytes, test_fraction: float) -> bool:
    """Whether ``prompt`` belongs to the held-out split (a fixed hash bucket, independent of seeds)."""
    h = int.from_bytes(hashlib.blake2b(task.encode() + b"\x00" + prompt, digest_size=8).digest(), "big")
    return (h % 1_000_000) < test_fraction * 1_000_000


def encode_bytes(data: bytes | str) -> list[int]:
    """Bytes (or a UTF-8 string) -> ids 0..255."""
    return list(data.encode() if isinstance(data, str) else bytes(data))


def decode_ids(ids: Sequence[int] | torch.Tensor, stop_at_eos: bool = True) -> bytes:
    """Ids -> bytes: stops at the first EOS (if asked) and drops every other special id."""
    out = bytearray()
    for t in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        t = int(t)
        if t == EOS and stop_at_eos:
            break
        if 0 <= t < NUM_BYTES:
            out.append(t)
    return bytes(out)


def answers_exact_match(generated: Sequence[Sequence[int]] | torch.Tensor, answers: Sequence[bytes]) -> torch.Tensor:
    """Per-example exact match ``(B,)`` bool of generated answer ids (decoded up to EOS) vs ``answers``."""
    if len(generated) != len(answers):
        raise ValueError(f"got {len(generated)} generations for {len(answers)} answers")
    return torch.tensor([decode_ids(g) == bytes(a) for g, a in zip(generated, answers)], dtype=torch.bool)


class SeqTask(Dataset):
    """Map-style dataset of one synthetic task; see the module docstring for the format.

    Args:
        task: one of ``TASKS``.
        length: exact answer length in bytes (digits for ``add``, steps for the compounding tasks).
        num_examples: dataset size.
        seed: item ``i`` of (task, length, seed, split) is always the same example.
        split: ``"train"`` or ``"test"``; the two never share a prompt.
        alphabet: symbols for copy / reverse / sort prompts (default ``a..z``).
        test_fraction: share of the prompt space reserved for ``"test"``.
        add_bos: prefix every sequence with BOS.

    Items are dicts: ``tokens (S,)``, ``input_ids (S-1,)``, ``target_ids (S-1,)``, ``loss_mask
    (S-1,)`` bool, ``prompt_ids (P,)`` (``[BOS] prompt SEP`` left-padded with PAD to the longest
    prompt, ready for generation), ``prompt_len``, ``answer_len`` (ints), ``prompt``, ``answer``
    (bytes; collated into lists).
    """

    def __init__(self, task: str, length: int, num_examples: int, seed: int = 0, split: str = "train",
                 alphabet: str | bytes = string.ascii_lowercase, test_fraction: float = 0.1, add_bos: bool = False):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if int(length) < 1:
            raise ValueError(f"length (answer length) must be >= 1, got {length}")
        if int(num_examples) < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.alphabet = alphabet.encode() if isinstance(alphabet, str) else bytes(alphabet)
        self.compounding = COMPOUNDING.get(task)
        uses_alphabet = task != "add" and self.compounding is None
        if uses_alphabet and not self.alphabet:
            raise ValueError("alphabet must hold at least one symbol")
        if uses_alphabet and len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet has repeated symbols: {self.alphabet!r}")
        self.task, self.length, self.num_examples = task, int(length), int(num_examples)
        self.seed, self.split, self.test_fraction, self.add_bos = int(seed), split, float(test_fraction), add_bos
        # Longest prompt: copy/reverse/sort -> length; add -> two numbers of <= length digits and "+".
        if self.compounding is not None:
            self.max_prompt_len = self.compounding.prompt_len(self.length)
            self.max_answer_len = self.compounding.answer_len(self.length)
        else:
            self.max_prompt_len = 2 * self.length + 1 if task == "add" else self.length
            self.max_answer_len = self.length
        self.seq_len = int(add_bos) + self.max_prompt_len + 1 + self.max_answer_len + 1

    def _draw_prompt(self, rng: random.Random) -> bytes:
        if self.compounding is not None:
            return self.compounding.draw_prompt(rng, self.length)
        if self.task == "add":
            lo = 0 if self.length == 1 else 10 ** (self.length - 1)
            total = rng.randint(lo, 10**self.length - 1)
            a = rng.randint(0, total)
            return f"{a}+{total - a}".encode()
        return bytes(rng.choice(self.alphabet) for _ in range(self.length))

    def example(self, i: int) -> tuple[bytes, bytes]:
        """``(prompt, answer)`` of item ``i``."""
        if not -self.num_examples <= i < self.num_examples:
            raise IndexError(f"index {i} out of range for {self.num_examples} examples")
        i %= self.num_examples
        want_test = self.split == "test"
        for attempt in range(_MAX_TRIES):
            rng = random.Random(f"{self.task}|{self.length}|{self.seed}|{self.split}|{i}|{attempt}")
            prompt = self._draw_prompt(rng)
            if in_test_split(self.task, prompt, self.test_fraction) == want_test:
                return prompt, solve(self.task, prompt)
        raise RuntimeError(
            f"could not draw a {self.split} prompt for task {self.task!r} at length {self.length} "
            f"in {_MAX_TRIES} tries: the prompt space is too small; raise length or widen the alphabet"
        )

    def __len__(self) -> int:
        return self.num_examples

    # ------------------------------------------------------------------ compounding tasks
    def _compounding(self, what: str):
        if self.compounding is None:
            raise ValueError(f"{what} exists for the compounding tasks {sorted(COMPOUNDING)}, not for {self.task!r}")
        return self.compounding

    def check(self, prompt: bytes, generated: Sequence[int] | torch.Tensor) -> dict[str, float]:
        """The task's checker on generated answer ids (decoded up to EOS): final_exact, step_exact,
        step_valid, exact (``latentar.data.compounding.CompoundingTask.check``)."""
        return self._compounding("check()").check(prompt, decode_ids(generated))

    def expert_targets(self, prompt_ids: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        """The expert's next id after every prefix of an answer: ``out[j]`` = the correct id after
        ``prompt answer[:j]`` (EOS once the answer is complete). ``prompt_ids``: the packed prompt
        (``[BOS] prompt SEP``); ``answer_ids (A,)``: any ids, e.g. a model's free run."""
        task = self._compounding("expert_targets()")
        prompt = decode_ids(prompt_ids, stop_at_eos=False)
        ids = answer_ids.tolist()
        out, prefix = [], bytearray()
        for t in ids:
            nxt = task.next_byte(prompt, bytes(prefix))
            out.append(EOS if nxt is None else nxt)
            if not 0 <= t < NUM_BYTES:  # a special id (EOS, PAD) ends what the expert can continue
                break
            prefix.append(t)
        out += [PAD] * (len(ids) - len(out))
        return torch.tensor(out, dtype=torch.long)

    def __getitem__(self, i: int) -> dict:
        prompt, answer = self.example(i)
        head = ([BOS] if self.add_bos else []) + encode_bytes(prompt) + [SEP]
        body = encode_bytes(answer) + [EOS]
        tokens = torch.full((self.seq_len,), PAD, dtype=torch.long)
        tokens[: len(head) + len(body)] = torch.tensor(head + body)
        mask = torch.zeros(self.seq_len, dtype=torch.bool)  # over positions of `tokens`
        mask[len(head): len(head) + len(body)] = True
        prompt_ids = torch.full((int(self.add_bos) + self.max_prompt_len + 1,), PAD, dtype=torch.long)
        prompt_ids[prompt_ids.numel() - len(head):] = torch.tensor(head)
        return {"tokens": tokens, "input_ids": tokens[:-1], "target_ids": tokens[1:], "loss_mask": mask[1:],
                "prompt_ids": prompt_ids, "prompt_len": len(head), "answer_len": len(body) - 1,
                "prompt": prompt, "answer": answer}
