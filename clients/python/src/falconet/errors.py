"""Errors of the falconet client: one exception type carrying the wire's stable codes."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["FalconetError", "RETRYABLE"]

#: Codes the dispatcher marks retryable (docs/protocol.md, "Error codes").
RETRYABLE = frozenset(
    {
        "HELLO_TIMEOUT",
        "TASK_EXECUTOR_LOST",
        "SPAWN_HELPER_LOST",
        "SHUTTING_DOWN",
        "SLOW_CONSUMER",
        "STORE_FAILED",
        "UNREACHABLE",
        "RATE_LIMITED",
        "INTERNAL",
        "MOVED",
    }
)


class FalconetError(Exception):
    """An error with a stable ``code`` (``TASK_INVALID``, ``UNREACHABLE``, ``CLIENT_CLOSED``...).

    ``code`` is the contract: match on it. ``message`` is for people. ``retryable`` says whether
    doing the same thing again later may succeed (as the dispatcher reports it; for codes the
    client makes itself, as docs/protocol.md lists them).
    """

    def __init__(self, code: str, message: str = "", retryable: bool | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE if retryable is None else bool(retryable)

    @classmethod
    def from_wire(cls, e: Mapping[str, Any]) -> "FalconetError":
        """Builds the error from a wire ``{code, message, retryable}`` map."""
        return cls(str(e.get("code", "INTERNAL")), str(e.get("message", "")), e.get("retryable"))

    def __repr__(self) -> str:
        return f"FalconetError({self.code!r}, {self.message!r}, retryable={self.retryable})"
