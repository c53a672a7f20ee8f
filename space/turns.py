"""Whose job runs next: one visitor one job, a cap on anonymous visitors together, and first come, first served
among the jobs that can start.

Gradio's queue hands a job to a worker thread; before, a job that found its model busy waited for the model's
lock inside that worker, so two visitors waiting on a busy model held both workers and every other model's
jobs waited behind them. Here gradio's workers are many (waiting in one costs a sleeping thread), and a job
runs only once it holds both one of `slots` compute turns and its model's lock: a job waiting for a busy
model holds no turn, so another model's job starts meanwhile. Among the jobs that could start, the one that
came first starts first, and each waiting visitor is told how many jobs are ahead.

Who one visitor is: a signed-in visitor by their Hugging Face name (one job running or waiting); anonymous
visitors have no name, and a new session costs nothing, so together they get at most `anonymous_jobs`
running or waiting and, when there is more than one turn, leave one turn to signed-in visitors; per network
address (the first `X-Forwarded-For` hop, or the peer) at most `per_address`. An address is a hint, not an
identity (a client may send any `X-Forwarded-For`), so the anonymous cap, not the address, is what bounds
them. Locally (not public) only the turns apply.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from anatomy.errors import AnatomyError
from anatomy.progress import Cancelled

from .access import public_mode

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Visitor:
    """Who asks: their session (hashed), their Hugging Face name when signed in, and their address (a hint)."""

    session: str
    name: str | None = None
    address: str = ""

    @property
    def key(self) -> str:
        return f"user:{self.name}" if self.name else ANONYMOUS


@dataclass(frozen=True)
class Limits:
    """How many jobs each may have running or waiting at once (None: no limit), and the compute turns."""

    slots: int = 2
    per_session: int | None = None
    per_visitor: int | None = None
    per_address: int | None = None
    anonymous_jobs: int | None = None

    @classmethod
    def from_env(cls) -> Limits:
        """ANATOMY_CONCURRENCY turns (default 2); in public mode ANATOMY_JOBS_PER_SESSION (1),
        ANATOMY_JOBS_PER_VISITOR (1), ANATOMY_JOBS_PER_ADDRESS (2) and ANATOMY_ANONYMOUS_JOBS (8); 0 means
        no limit. Locally every limit is off unless set."""
        public = public_mode()

        def limit(name: str, public_default: int) -> int | None:
            value = int(os.environ.get(name, str(public_default) if public else "0"))
            return value if value > 0 else None
        return cls(slots=max(1, int(os.environ.get("ANATOMY_CONCURRENCY", "2"))),
                   per_session=limit("ANATOMY_JOBS_PER_SESSION", 1), per_visitor=limit("ANATOMY_JOBS_PER_VISITOR", 1),
                   per_address=limit("ANATOMY_JOBS_PER_ADDRESS", 2),
                   anonymous_jobs=limit("ANATOMY_ANONYMOUS_JOBS", 8))


@dataclass(eq=False)
class Ticket:
    """One job from admission to its end; `lock` is its model's, held while it runs."""

    visitor: Visitor
    lock: threading.Lock | None = None
    running: bool = field(default=False)


class Turns:
    """The admission rules and the waiting line of the app's jobs (one per server)."""

    def __init__(self, limits: Limits | None = None):
        self._limits = limits
        self._cond = threading.Condition()
        self._tickets: list[Ticket] = []  # admitted, in order of arrival: running ones and waiting ones

    @property
    def limits(self) -> Limits:
        return self._limits or Limits.from_env()  # read each time, so a deployer's (or test's) change applies

    @contextmanager
    def admitted(self, visitor: Visitor) -> Iterator[Ticket]:
        """A ticket for the whole job; refused at once (one line) when the visitor is over a limit."""
        ticket = Ticket(visitor)
        with self._cond:
            self._refuse_over_limit(visitor)
            self._tickets.append(ticket)
        try:
            yield ticket
        finally:
            with self._cond:
                self._tickets.remove(ticket)
                if ticket.running and ticket.lock is not None:
                    ticket.lock.release()
                self._cond.notify_all()

    def _refuse_over_limit(self, visitor: Visitor) -> None:
        limits, mine = self.limits, [t.visitor for t in self._tickets]
        wait = "wait for it to finish or press Stop, so every visitor gets a turn."
        plural = "s" if (limits.per_session or 1) > 1 else ""
        checks = [(limits.per_session, sum(v.session == visitor.session for v in mine),
                   f"You already have {limits.per_session} job{plural} running or waiting: {wait}"),
                  (limits.per_visitor if visitor.name else None, sum(v.key == visitor.key for v in mine),
                   f"You ({visitor.name}) already have a job running or waiting: {wait}")]
        if not visitor.name:
            checks += [(limits.per_address, sum(not v.name and v.address == visitor.address for v in mine),
                        f"Your network address already has {limits.per_address} jobs running or waiting: {wait}"),
                       (limits.anonymous_jobs, sum(not v.name for v in mine),
                        f"Anonymous visitors together have {limits.anonymous_jobs} jobs running or waiting, all "
                        "this Space gives them: sign in with Hugging Face (the button at the top) for a turn of "
                        "your own, or try again in a few minutes.")]
        for limit, count, message in checks:
            if limit is not None and count >= limit:
                raise AnatomyError(message)

    def wait(self, ticket: Ticket, lock: threading.Lock, cancel: threading.Event | None = None,
             tell: Callable[[int], None] | None = None) -> None:
        """Block until this job may run: a free turn, its model's lock, and no earlier job that could take it.
        `tell(ahead)` hears how many jobs are ahead whenever that changes; Stop (`cancel`) ends the wait."""
        told = None
        with self._cond:
            ticket.lock = lock
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("stopped while waiting for your turn")
                if self._first_to_start() is ticket and lock.acquire(blocking=False):
                    ticket.running = True
                    self._cond.notify_all()
                    return
                ahead = self._ahead_of(ticket)
                if tell is not None and ahead != told:
                    tell(ahead)
                    told = ahead
                self._cond.wait(timeout=0.25)

    def _first_to_start(self) -> Ticket | None:
        """The earliest waiting job that could run now (a turn free, its model free, anonymous within its
        share of the turns)."""
        limits = self.limits
        running = [t for t in self._tickets if t.running]
        if len(running) >= limits.slots:
            return None
        anonymous_share = limits.slots - 1 if limits.anonymous_jobs is not None and limits.slots > 1 else limits.slots
        anonymous_running = sum(not t.visitor.name for t in running)
        for t in self._tickets:
            if t.running or t.lock is None or t.lock.locked():
                continue
            if not t.visitor.name and anonymous_running >= anonymous_share:
                continue
            return t
        return None

    def _ahead_of(self, ticket: Ticket) -> int:
        """Jobs running, and jobs waiting that came before this one."""
        index = self._tickets.index(ticket)
        return sum(t.running or i < index for i, t in enumerate(self._tickets) if t is not ticket)

    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs now."""
        with self._cond:
            running = sum(t.running for t in self._tickets)
            return running, len(self._tickets) - running


TURNS = Turns()

_NAMES: dict[str, str | None] = {}
_NAMES_GUARD = threading.Lock()


def visitor_name(token: str | None) -> str | None:
    """The Hugging Face name behind a visitor's token (asked of the Hub once per token, remembered by the token's
    hash); None for no token or one the Hub does not accept."""
    if not token:
        return None
    key = hashlib.sha256(token.encode()).hexdigest()
    with _NAMES_GUARD:
        if key in _NAMES:
            return _NAMES[key]
    from huggingface_hub import HfApi
    try:
        name = HfApi(token=token).whoami().get("name")
    except Exception:  # noqa: BLE001 - any refusal or failure: treated as anonymous, never as someone else
        name = None
    name = name if isinstance(name, str) and name else None
    with _NAMES_GUARD:
        _NAMES[key] = name
    return name


def address_of(request: object) -> str:
    """The visitor's address as the first X-Forwarded-For hop (what a Space's proxy passes), else the peer's."""
    headers = getattr(request, "headers", None) or {}
    forwarded = str(headers.get("x-forwarded-for", "") or "").split(",")[0].strip()
    client = getattr(request, "client", None)
    return (forwarded or str(getattr(client, "host", "") or ""))[:64]
