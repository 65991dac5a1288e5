"""Seq2seq tasks with compounding: every answer step is computed from the previous step's written value.

What: each task is a small state machine. The prompt fixes an initial state s_0 and one input
u_j per step; the answer writes every intermediate state in a fixed-width field

    s_j = step(s_{j-1}, u_j),        answer = write(s_1) write(s_2) ... write(s_n)

so step j is easiest to produce by reading step j-1 from the answer written so far, as a GSM8K
solution line reuses the previous line's result. A model trained with teacher forcing always sees a
correct previous step; under its own prefix one wrong step makes every later step wrong against
the reference even if each later step is computed correctly from what was written: the error
compounds (unlike copy / reverse / sort, whose step j depends on the prompt alone).

Tasks (``n`` = number of steps):
* ``running_sum`` (a running state: the finite-state transducer of addition mod 10): prompt = n
  digits d_1..d_n; s_0 = 0, s_j = (s_{j-1} + d_j) mod 10, written as one digit. Answer: n bytes.
* ``chain`` (multi-step arithmetic with intermediate results): prompt = a two-digit start value
  then n operations "+d" or "-d" (d in 1..9), e.g. ``47+5-3``; s_j = (s_{j-1} +- d_j) mod 100,
  written as two digits and ";" (``52;49;``). Answer: 3n bytes.
* ``add_lsd`` (multi-digit addition, least-significant digit first, with carries): prompt = two
  n-digit numbers written LSD first, ``a+b``; the state is (digit, carry) with
  t = a_j + b_j + c_{j-1}, digit_j = t mod 10, c_j = t // 10 (c_0 = 0), written as the two
  characters "digit carry". Answer: 2n bytes; the sum is digit_1..digit_n then c_n (LSD first).

Checker (:meth:`CompoundingTask.check`): splits a generated answer into its n fields and scores
* ``final_exact``: the final answer (the last state for running_sum / chain, the whole sum for
  add_lsd) equals the reference's;
* ``step_exact``: share of steps equal to the reference's step;
* ``step_valid``: share of steps that are the correct step *given the previous step as written*
  (a step after an unreadable one is scored against the true previous state), the quantity that
  separates a fresh mistake from an inherited one.

Expert (:meth:`CompoundingTask.next_byte`): the correct next byte for any written prefix, with the
same rule: the state is read from the last complete field as written (the true state where that
field is unreadable). This is the relabelling target of ``latentar.exposure.Relabel`` (DAgger /
optimal completion): the continuation that is correct *for that prefix*. Since the final answer is
the last state, an answer is exact iff every step is valid.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence

DIGITS = b"0123456789"


class CompoundingTask(ABC):
    """One compounding task (see the module docstring); subclasses define the state machine."""

    name: str
    width: int  # bytes per written step

    # ------------------------------------------------------------------ the state machine
    @abstractmethod
    def draw_prompt(self, rng: random.Random, n: int) -> bytes:
        """A random prompt with ``n`` steps from ``rng``."""

    @abstractmethod
    def parse(self, prompt: bytes) -> tuple[object, list]:
        """``(s_0, [u_1, ..., u_n])`` from a prompt."""

    @abstractmethod
    def step(self, state, u):
        """s_j = step(s_{j-1}, u_j)."""

    @abstractmethod
    def write(self, state) -> bytes:
        """The ``width`` bytes that write a state."""

    @abstractmethod
    def read(self, field: bytes):
        """The state a written field says, or None if it is unreadable."""

    def final(self, states: Sequence) -> bytes:
        """The final answer from the states s_1..s_n (default: the last state as written)."""
        return self.write(states[-1])

    # ------------------------------------------------------------------ derived
    @abstractmethod
    def prompt_len(self, n: int) -> int:
        """Prompt bytes for ``n`` steps (the same for every prompt)."""

    def answer_len(self, n: int) -> int:
        return self.width * n

    def states(self, prompt: bytes) -> list:
        s, inputs = self.parse(prompt)
        out = []
        for u in inputs:
            s = self.step(s, u)
            out.append(s)
        return out

    def solve(self, prompt: bytes) -> bytes:
        return b"".join(self.write(s) for s in self.states(prompt))

    def fields(self, answer: bytes, n: int) -> list[bytes]:
        """The answer cut into n fields of ``width`` bytes (missing bytes give short fields)."""
        return [bytes(answer[j * self.width:(j + 1) * self.width]) for j in range(n)]

    def next_byte(self, prompt: bytes, prefix: bytes) -> int | None:
        """The correct next byte after ``prompt SEP prefix`` (None: the answer is complete, emit EOS)."""
        s0, inputs = self.parse(prompt)
        j, slot = divmod(len(prefix), self.width)
        if j >= len(inputs):
            return None
        if j == 0:
            prev = s0
        else:
            prev = self.read(bytes(prefix[(j - 1) * self.width: j * self.width]))
            if prev is None:  # unreadable: continue from the true state
                prev = self.states(prompt)[j - 1]
        return self.write(self.step(prev, inputs[j]))[slot]

    def check(self, prompt: bytes, answer: bytes) -> dict[str, float]:
        """Score a generated answer (bytes up to EOS): final_exact, step_exact, step_valid, exact."""
        s0, inputs = self.parse(prompt)
        truth = self.states(prompt)
        ref = [self.write(s) for s in truth]
        got = self.fields(answer, len(inputs))
        exact_steps = [g == r for g, r in zip(got, ref)]
        valid, prev = [], s0
        for j, (g, u) in enumerate(zip(got, inputs)):
            valid.append(g == self.write(self.step(prev, u)))
            read = self.read(g)
            prev = read if read is not None else truth[j]
        states = [self.read(g) for g in got]
        final = self.final(states) if all(s is not None for s in states) else None
        n = max(1, len(inputs))
        return {"final_exact": float(final == self.final(truth)), "step_exact": sum(exact_steps) / n,
                "step_valid": sum(valid) / n, "exact": float(bytes(answer) == b"".join(ref))}


def _digit(b: int) -> int | None:
    return b - 48 if 48 <= b <= 57 else None


class RunningSum(CompoundingTask):
    name, width = "running_sum", 1

    def draw_prompt(self, rng, n):
        return bytes(rng.choice(DIGITS) for _ in range(n))

    def prompt_len(self, n):
        return n

    def parse(self, prompt):
        ds = [_digit(b) for b in prompt]
        if not ds or None in ds:
            raise ValueError(f"running_sum: the prompt must be digits, got {prompt!r}")
        return 0, ds

    def step(self, s, d):
        return (s + d) % 10

    def write(self, s):
        return str(s).encode()

    def read(self, field):
        return _digit(field[0]) if len(field) == 1 else None


class Chain(CompoundingTask):
    name, width = "chain", 3

    def draw_prompt(self, rng, n):
        ops = "".join(rng.choice("+-") + str(rng.randint(1, 9)) for _ in range(n))
        return f"{rng.randint(0, 99):02d}{ops}".encode()

    def prompt_len(self, n):
        return 2 + 2 * n

    def parse(self, prompt):
        p = bytes(prompt)
        if len(p) < 2 or len(p) % 2 or not p[:2].isdigit():
            raise ValueError(f"chain: the prompt must be two digits then +d / -d operations, got {prompt!r}")
        ops = []
        for k in range(2, len(p), 2):
            op, d = chr(p[k]), _digit(p[k + 1])
            if op not in "+-" or d is None:
                raise ValueError(f"chain: bad operation {p[k:k + 2]!r} in {prompt!r}")
            ops.append(d if op == "+" else -d)
        return int(p[:2]), ops

    def step(self, s, d):
        return (s + d) % 100

    def write(self, s):
        return f"{s:02d};".encode()

    def read(self, field):
        if len(field) != 3 or field[2:] != b";" or not field[:2].isdigit():
            return None
        return int(field[:2])


class AddLSD(CompoundingTask):
    name, width = "add_lsd", 2

    def draw_prompt(self, rng, n):
        a = bytes(rng.choice(DIGITS) for _ in range(n))
        b = bytes(rng.choice(DIGITS) for _ in range(n))
        return a + b"+" + b

    def prompt_len(self, n):
        return 2 * n + 1

    def parse(self, prompt):
        parts = bytes(prompt).split(b"+")
        if len(parts) != 2 or len(parts[0]) != len(parts[1]) or not (parts[0] + parts[1]).isdigit():
            raise ValueError(f"add_lsd: the prompt must be two equal-length digit strings a+b, got {prompt!r}")
        return (0, 0), [(x - 48, y - 48) for x, y in zip(*parts)]

    def step(self, s, u):
        t = u[0] + u[1] + s[1]
        return t % 10, t // 10

    def write(self, s):
        return f"{s[0]}{s[1]}".encode()

    def read(self, field):
        if len(field) != 2:
            return None
        d, c = _digit(field[0]), _digit(field[1])
        return None if d is None or c not in (0, 1) else (d, c)

    def final(self, states):
        """The sum, most significant digit first (the final carry, then the digits in reverse)."""
        return str(int("".join(str(s[0]) for s in reversed(states)))
                   + states[-1][1] * 10 ** len(states)).encode()


COMPOUNDING: dict[str, CompoundingTask] = {t.name: t for t in (RunningSum(), Chain(), AddLSD())}
