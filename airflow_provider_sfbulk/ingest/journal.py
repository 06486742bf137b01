"""The load's state, saved to the checkpoint after every change, safe to use from several threads."""

from __future__ import annotations

import threading
from typing import Any

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.ingest.state import (
    ClockOffset,
    LoadState,
    LostCreate,
    Part,
    Phase,
    Transition,
    now_iso,
)

__all__ = ["STATE_KEY", "LoadJournal"]

#: Checkpoint key of the load's state.
STATE_KEY = "ingest"


class LoadJournal:
    """Owns the :class:`~airflow_provider_sfbulk.ingest.state.LoadState` of one load and its checkpoint.

    Every change goes through :meth:`update` or :meth:`record` (or :meth:`save` after changing the state
    directly), under one lock, and is durable when the call returns. It also keeps the ids of the jobs
    this process created and has not seen finish, for aborting them when the task is killed.
    """

    def __init__(self, checkpoint: TaskCheckpoint, state: LoadState) -> None:
        self.checkpoint = checkpoint
        self.state = state
        self._lock = threading.RLock()
        self._in_flight: list[str] = []

    @classmethod
    def load(cls, checkpoint: TaskCheckpoint) -> LoadJournal | None:
        """The journal of the load in the checkpoint, or ``None`` when there is none.

        :raises ValueError: the checkpoint holds a load of another format version.
        """
        document = checkpoint.get(STATE_KEY)
        if document is None:
            return None
        return cls(checkpoint, LoadState.from_json(document))

    def save(self) -> None:
        """Write the whole state to the checkpoint."""
        with self._lock:
            self.checkpoint.set(STATE_KEY, self.state.to_json())

    def update(self, part: Part, **changes: Any) -> None:
        """Change fields of ``part`` and save."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(part, name):
                    raise AttributeError(f"a part has no field {name!r}")
                setattr(part, name, value)
            self.checkpoint.set(STATE_KEY, self.state.to_json())

    def record(self, part: Part, job_id: str, job_state: str, **extra: Any) -> None:
        """Append a line to the part's audit trail (saved with the next change)."""
        with self._lock:
            part.states.append(Transition(job_id, job_state, now_iso(), dict(extra)))

    def abandon(self, part: Part, job_id: str) -> None:
        """Note that ``job_id`` no longer carries ``part``; the part goes back to ``new``."""
        with self._lock:
            part.abandoned_job_ids.append(job_id)
            part.states.append(Transition(job_id, "Abandoned", now_iso()))
            if job_id in self._in_flight:
                self._in_flight.remove(job_id)
        self.update(part, phase=Phase.NEW, job_id=None)

    def lost_create(self, lost: LostCreate) -> None:
        """Remember a create request whose answer never came (its job, if any, is an orphan)."""
        with self._lock:
            self.state.lost_creates.append(lost)
            self.save()

    def learn_clock(self, sent_at: float, answered_at: float, created_at: float) -> None:
        """Narrow the known offset of Salesforce's clock with one job created by this load."""
        with self._lock:
            known = self.state.clock_offset or ClockOffset(float("-inf"), float("inf"))
            narrowed = known.narrowed(sent_at, answered_at, created_at)
            if narrowed.low <= narrowed.high:  # a contradiction means a clock jump: keep what we had
                self.state.clock_offset = narrowed

    def orphans_settled(self, aborted: list[str]) -> None:
        """The lost creates were looked into; ``aborted`` are the orphan jobs aborted."""
        with self._lock:
            self.state.lost_creates.clear()
            self.state.orphans_aborted.extend(aborted)
            self.save()

    def delete(self) -> None:
        """Forget the load (after success: clearing the task later loads again)."""
        self.checkpoint.delete(STATE_KEY)

    # --- jobs of this process, for on_kill ---------------------------------------------------------

    def job_started(self, job_id: str) -> None:
        """Remember a job this process created or adopted."""
        with self._lock:
            if job_id not in self._in_flight:
                self._in_flight.append(job_id)

    def jobs_in_flight(self) -> list[str]:
        """Jobs created or adopted by this process that may still run."""
        with self._lock:
            return list(self._in_flight)

    def forget_jobs(self) -> None:
        """Nothing is in flight any more (every job is terminal)."""
        with self._lock:
            self._in_flight.clear()
