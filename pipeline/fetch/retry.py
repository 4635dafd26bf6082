"""When to try a transfer again: the retry policy, and the one back-off-or-give-up step that file
transfers and ENA searches share."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..runlog import RunLog


class Retryable(Exception):
    """A transfer attempt failed in a way another attempt may not (``wait``: a server's hint)."""

    def __init__(self, reason: str, wait: Optional[float] = None):
        super().__init__(reason)
        self.wait = wait


@dataclass
class RetryPolicy:
    attempts: int = 6  # transfers tried per file before giving up
    backoff_base: float = 2.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 120.0
    stall_seconds: float = 60.0  # no bytes for this long aborts the attempt (then resumes)
    max_retry_after: float = 600.0  # cap on a server's Retry-After

    def with_stall(self, stall_seconds: Optional[float]) -> RetryPolicy:
        """This policy with another ``stall_seconds`` (a species' ``download.stall_seconds``), or itself."""
        return dataclasses.replace(self, stall_seconds=stall_seconds) if stall_seconds else self

    def delay(self, attempt: int, hinted: Optional[float] = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: capped exponential back-off with jitter."""
        if hinted is not None:
            return min(max(hinted, 0.0), self.max_retry_after)
        base = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)


def wait_or_give_up(
    policy: RetryPolicy,
    attempt: int,
    why: Retryable,
    log: RunLog,
    label: str,
    give_up: GiveUp,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """After attempt ``attempt`` failed with ``why``: raise ``give_up(message)`` when it was the
    last one, else log and sleep the back-off (or the server's hint) before the next. ``sleep``
    may be an event's ``wait``, so that a transfer being cancelled stops waiting at once."""
    if attempt >= policy.attempts:
        log.write(f"{label}: attempt {attempt}: {why}; giving up")
        w = give_up.waited
        waited = f" over {w:.1f} s of waiting" if 0 < w < 10 else f" over {w:.0f} s of waiting" if w else ""
        raise give_up(f"failed after {attempt} attempts{waited}; last: {why}") from None
    wait = policy.delay(attempt, why.wait)
    log.write(f"{label}: attempt {attempt}: {why}; retrying in {wait:.1f} s")
    sleep(wait)
    give_up.waited += wait


class GiveUp:
    """``give_up`` for :func:`wait_or_give_up` that counts the back-off slept, so the final message
    says how long the whole effort waited: ``GiveUp(lambda m: SomeError(f"{host}: {m}"))``."""

    def __init__(self, make: Callable[[str], Exception]):
        self.make = make
        self.waited = 0.0

    def __call__(self, message: str) -> Exception:
        return self.make(message)
