"""The timing protocol: every call warmed up, then timed *interleaved* with the others, medians and spread.

The protocol is the one timm's ``benchmark.py`` popularised, made time-based: every call is warmed up first
(``warmup`` calls, which also lets oneDNN / cuDNN pick and cache kernels); the timed calls take turns in
``rounds`` rounds, so a burst of load from another process on a shared machine lands on all of them instead of
skewing one; each call runs until it has both ``repeats`` calls and ``min_time_s`` seconds of timed calls, every
call timed on its own (``time.perf_counter``; on CUDA with ``torch.cuda.synchronize`` before and after).  A
``Timing`` reports the median with quartiles and 10th / 90th percentiles, never the mean, which one
descheduled call can move.  ``lightnets.deploy.bench`` builds its rows on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models.layers import check_int, check_positive_int
from .engines import torch_threads

__all__ = [
    "DEFAULT_MIN_TIME_S",
    "DEFAULT_REPEATS",
    "DEFAULT_ROUNDS",
    "DEFAULT_WARMUP",
    "TimedCall",
    "Timing",
    "check_timing_args",
    "time_function",
    "time_interleaved",
]

#: Defaults of ``benchmark`` (and of ``lightnets bench``).
DEFAULT_WARMUP = 5
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_REPEATS = 10
DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class Timing:
    """Summary of per-call latencies in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        if not samples_ms:
            raise ValueError("no timing samples")
        p10, q1, med, q3, p90 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [10, 25, 50, 75, 90])
        return cls(
            median_ms=float(med), q1_ms=float(q1), q3_ms=float(q3), p10_ms=float(p10), p90_ms=float(p90),
            min_ms=float(min(samples_ms)), max_ms=float(max(samples_ms)), repeats=len(samples_ms),
        )  # fmt: skip


@dataclass
class TimedCall:
    """One thing to time: ``fn()`` (its result is ignored), under ``threads``, synchronising ``cuda`` if set."""

    fn: Callable[[], Any]
    threads: int | None = None
    cuda: bool = False


def check_timing_args(warmup: int, min_time_s: float, repeats: int, rounds: int) -> None:
    """ValueError naming the first bad timing setting (before any model is built)."""
    check_int("warmup", warmup, minimum=0)
    if not isinstance(min_time_s, int | float) or not min_time_s >= 0:
        raise ValueError(f"min_time_s must be a number >= 0, got {min_time_s!r}")
    check_positive_int("repeats", repeats)
    check_positive_int("rounds", rounds)


def time_interleaved(
    calls: Sequence[TimedCall],
    *,
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    repeats: int = DEFAULT_REPEATS,
    rounds: int = DEFAULT_ROUNDS,
) -> list[Timing]:
    """Time several calls fairly against each other; one ``Timing`` per call, in order.

    Each call is warmed up, then the calls take turns for ``rounds`` rounds; in each round a call runs until it
    has ``ceil(repeats / rounds)`` timed calls and ``min_time_s / rounds`` seconds of them, so in total every
    call gets at least ``repeats`` calls and ``min_time_s`` seconds.
    """
    check_timing_args(warmup, min_time_s, repeats, rounds)
    for call in calls:
        if call.threads is not None:
            check_positive_int("threads", call.threads)
    per_round_calls = math.ceil(repeats / rounds)
    per_round_time = min_time_s / rounds
    samples: list[list[float]] = [[] for _ in calls]

    def once(call: TimedCall) -> float:
        if call.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call.fn()
        if call.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    for call in calls:
        with torch_threads(call.threads):
            for _ in range(warmup):
                once(call)
    for _ in range(rounds):
        for call, out in zip(calls, samples, strict=True):
            with torch_threads(call.threads):
                n, spent = 0, 0.0
                while n < per_round_calls or spent < per_round_time * 1e3:
                    ms = once(call)
                    out.append(ms)
                    n, spent = n + 1, spent + ms
    return [Timing.from_samples(s) for s in samples]


def time_function(
    fn: Callable[[], Any],
    *,
    threads: int | None = None,
    cuda: bool = False,
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    repeats: int = DEFAULT_REPEATS,
) -> Timing:
    """Latency of one call of ``fn`` (see ``time_interleaved``, here with a single call and one round)."""
    return time_interleaved(
        [TimedCall(fn, threads, cuda)], warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=1
    )[0]
