"""A ``concurrent.futures.Executor`` over a falconet dispatcher, for code that expects a thread
pool (workflow engines): ``submit(cmd=[...], **spec)`` returns a ``concurrent.futures.Future``
that resolves with the task's :class:`~falconet.Result`. The asyncio client runs on a background
thread with its own event loop."""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from .client import Client, connect
from .errors import FalconetError
from .models import Result, Task, to_wire_spec

__all__ = ["Executor"]


class Executor(concurrent.futures.Executor):
    """Runs tasks on a falconet dispatcher, like a thread pool runs functions.

    ``Executor(url, **opts)`` connects at once (``opts`` are those of :func:`falconet.connect`)
    and raises ``FalconetError`` if it cannot. ``submit(cmd=["echo", "hi"], timeout_ms=...)``, or
    ``submit(Task(...))``, or ``submit({"builtin": "noop"})`` returns a Future of the Result
    (whatever its status: check ``result.ok``). ``future.cancel()`` also cancels the task on the
    dispatcher. ``shutdown(wait=True)`` waits for pending tasks, then closes the client; with
    ``wait=False`` pending futures fail with ``CLIENT_CLOSED`` (the tasks stay in the session).
    """

    def __init__(self, url: str, **opts: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="falconet-executor", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._shutdown = False
        self._pending: dict[str, concurrent.futures.Future[Result]] = {}
        self._prefix = "x" + os.urandom(4).hex()
        self._counter = itertools.count(1)
        try:
            self.client: Client = asyncio.run_coroutine_threadsafe(connect(url, **opts), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    @property
    def session(self):  # type: ignore[no-untyped-def]
        """The client's session id and cursor (see :attr:`falconet.Client.session`)."""
        return self.client.session

    def submit(self, spec: Union[Task, Mapping[str, Any], None] = None, /, **fields: Any) -> "concurrent.futures.Future[Result]":  # type: ignore[override]
        """Submits one task; returns a Future of its Result. Give a Task, a dict, or keyword
        fields (``cmd=[...]``, ``builtin="noop"``, ``timeout_ms=...``); keywords override the spec."""
        wire_spec = to_wire_spec(spec) if spec is not None else {}
        wire_spec.update(to_wire_spec(fields))
        if wire_spec.get("id") is None:
            wire_spec["id"] = f"{self._prefix}-{next(self._counter)}"
        task_id = wire_spec["id"]
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut = asyncio.run_coroutine_threadsafe(self.client.submit(wire_spec), self._loop)
            self._pending[task_id] = fut
        fut.add_done_callback(lambda f, i=task_id: self._done(i, f))
        return fut

    def map(self, specs: Iterable[Union[Task, Mapping[str, Any]]], *, timeout: Optional[float] = None, chunksize: int = 1) -> Iterator[Result]:  # type: ignore[override]
        """Submits every spec at once and yields their Results in order (like ``Executor.map``,
        but over task specs rather than a function)."""
        futures = [self.submit(s) for s in specs]

        def gen() -> Iterator[Result]:
            for f in futures:
                yield f.result(timeout)

        return gen()

    def cancel(self, ids: Iterable[str], *, session: Optional[str] = None) -> int:
        """Cancels tasks by id (blocking), of this session or of ``session`` (``"*"``: every
        session); returns how many were unfinished."""
        return asyncio.run_coroutine_threadsafe(self.client.cancel(list(ids), session=session), self._loop).result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops taking tasks. ``cancel_futures``: cancel the unfinished ones on the dispatcher
        (their futures then resolve with ``cancelled`` results). ``wait``: wait for pending
        futures before closing the client; otherwise they fail with ``CLIENT_CLOSED``."""
        with self._lock:
            if self._shutdown and not self._thread.is_alive():
                return
            self._shutdown = True
            pending = dict(self._pending)
        if not self._thread.is_alive():
            return
        if cancel_futures and pending:
            try:
                self.cancel(pending.keys())
            except FalconetError:
                pass
        if wait and pending:
            concurrent.futures.wait(pending.values())
        try:
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(10)
        except Exception:
            pass
        self._stop_loop()

    def _done(self, task_id: str, fut: "concurrent.futures.Future[Result]") -> None:
        with self._lock:
            self._pending.pop(task_id, None)
        if fut.cancelled() and not self._shutdown:
            # Cancelling the future cancels the task too (best effort; its result is dropped).
            asyncio.run_coroutine_threadsafe(self._cancel_quietly(task_id), self._loop)

    async def _cancel_quietly(self, task_id: str) -> None:
        try:
            await self.client.cancel([task_id])
        except Exception:
            pass

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
