"""Typed views of what crosses the wire: Task (a spec), Result, TaskInfo, SessionInfo.

The wire uses camelCase keys (``exitCode``, ``timeoutMs``); these dataclasses use snake_case and
convert both ways. Fields the client does not know (from a newer dispatcher) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

__all__ = ["Task", "Result", "Timings", "TaskInfo", "SessionInfo", "to_wire_spec"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass
class Task:
    """What to run: exactly one of ``cmd`` (an argv list) and ``builtin`` (``"noop"`` or ``"sleep"``).

    ``id`` is optional (the client makes one); the other fields are those of the protocol's
    TaskSpec (docs/protocol.md), in snake_case: ``timeout_ms``, ``max_attempts``,
    ``retry_on_exit``, ``keep_sandbox``...
    """

    cmd: Optional[list[str]] = None
    builtin: Optional[str] = None
    id: Optional[str] = None
    ms: Optional[float] = None
    shell: Optional[bool] = None
    env: Optional[dict[str, str]] = None
    cwd: Optional[str] = None
    stdin: Optional[str] = None
    timeout_ms: Optional[float] = None
    max_attempts: Optional[int] = None
    priority: Optional[int] = None
    labels: Optional[dict[str, str]] = None
    retry_on_exit: Optional[list[int]] = None
    inputs: Optional[list[dict[str, Any]]] = None
    outputs: Optional[list[dict[str, Any]]] = None
    keep_sandbox: Optional[bool] = None
    environment: Optional[dict[str, Any]] = None

    def to_wire(self) -> dict[str, Any]:
        """The TaskSpec map sent in ``submit`` (camelCase keys, unset fields left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[_camel(f.name)] = list(v) if f.name == "cmd" else v
        return out


_TASK_FIELDS = {f.name for f in fields(Task)}


def to_wire_spec(spec: "Task | Mapping[str, Any]") -> dict[str, Any]:
    """A Task, or a dict with snake_case or camelCase keys, as the wire's TaskSpec map.

    Unknown keys are passed through unchanged: the dispatcher refuses them with TASK_INVALID,
    which says more than a client-side guess would.
    """
    if isinstance(spec, Task):
        return spec.to_wire()
    if not isinstance(spec, Mapping):
        raise TypeError(f"a task is a falconet.Task or a dict, not {type(spec).__name__}")
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if v is None:
            continue
        key = _camel(k) if k in _TASK_FIELDS else k
        out[key] = list(v) if key == "cmd" and isinstance(v, tuple) else v
    return out


@dataclass(frozen=True)
class Timings:
    """When the task was submitted, dispatched, started and finished (ms since the epoch)."""

    submitted: float
    dispatched: Optional[float]
    started: Optional[float]
    finished: float

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> "Timings":
        return cls(m.get("submitted", 0), m.get("dispatched"), m.get("started"), m.get("finished", 0))


@dataclass(frozen=True)
class Result:
    """One task's final result, whatever its status.

    ``status`` is ``succeeded``, ``failed``, ``timed_out``, ``cancelled`` or ``lost``; ``error`` is
    ``{"code", "message"}`` when the task did not succeed (``TASK_FAILED``, ``TASK_CANCELLED``...).
    """

    id: str
    status: str
    exit_code: Optional[int]
    signal: Optional[str]
    stdout: str
    stderr: str
    truncated: bool
    attempts: int
    executor: Optional[str]
    timings: Timings
    error: Optional[dict[str, str]] = None
    environment: Optional[dict[str, Any]] = None
    #: The task did not run: this is the memoized result of an earlier run with its ``cacheKey``.
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.status == "succeeded"

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> "Result":
        return cls(
            id=m["id"],
            status=m["status"],
            exit_code=m.get("exitCode"),
            signal=m.get("signal"),
            stdout=m.get("stdout", ""),
            stderr=m.get("stderr", ""),
            truncated=bool(m.get("truncated", False)),
            attempts=m.get("attempts", 0),
            executor=m.get("executor"),
            timings=Timings.from_wire(m.get("timings") or {}),
            error=m.get("error"),
            environment=m.get("environment"),
            cached=bool(m.get("cached", False)),
        )


@dataclass(frozen=True)
class TaskInfo:
    """What the dispatcher says of one task (answer to ``query``).

    ``state`` is ``queued``, ``running`` or a final status; ``result`` is there for a finished task
    when the dispatcher still has it; ``waiting`` says why a queued task waits, when known.
    """

    id: str
    session: str
    state: str
    attempt: int
    executor: Optional[str]
    submitted_at: Optional[float]
    dispatched_at: Optional[float]
    waiting: Optional[str] = None
    result: Optional[Result] = None

    @property
    def finished(self) -> bool:
        """True once the task has a final state."""
        return self.state not in ("queued", "running")

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> "TaskInfo":
        r = m.get("result")
        return cls(
            id=m["id"],
            session=m["session"],
            state=m["state"],
            attempt=m.get("attempt", 0),
            executor=m.get("executor"),
            submitted_at=m.get("submittedAt"),
            dispatched_at=m.get("dispatchedAt"),
            waiting=m.get("waiting"),
            result=Result.from_wire(r) if r else None,
        )


@dataclass(frozen=True)
class SessionInfo:
    """One session of the dispatcher (answer to ``sessions``)."""

    id: str
    created_at: float
    connected: bool
    submitted: int
    finished: int
    unfinished: int
    unacked: int

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> "SessionInfo":
        return cls(
            id=m["id"],
            created_at=m.get("createdAt", 0),
            connected=bool(m.get("connected", False)),
            submitted=m.get("submitted", 0),
            finished=m.get("finished", 0),
            unfinished=m.get("unfinished", 0),
            unacked=m.get("unacked", 0),
        )
