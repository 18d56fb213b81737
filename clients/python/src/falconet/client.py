"""The asyncio client. A client works in a session: every task it submits gets an id (its own, or
one the client makes), and the session outlives the connection: the client reconnects on its own,
resends submits the dispatcher had not yet acknowledged (idempotent by id), resends pending
requests, and resumes the result stream at its cursor.

Delivery: within one process every result is handed out once (to its ``submit()``/handle, or to a
``results()`` iterator), in sequence order for the iterators. Results are acknowledged lazily: a
result handed out by an iterator counts as consumed when the iterator is asked for the next one (or
closed), so after a crash of the client process a reattaching client gets the last few again.

Every wait ends: ``close()`` fails what is pending with ``CLIENT_CLOSED``.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import websockets

from . import wire
from .errors import FalconetError
from .models import Result, SessionInfo, Task, TaskInfo, to_wire_spec

__all__ = ["connect", "Client", "TaskHandle", "SessionRef", "SubmitSummary"]

log = logging.getLogger("falconet")

TaskLike = Union[Task, Mapping[str, Any]]

#: Errors after which dialing again cannot help (the dispatcher refused us for good).
#: Redirects (MOVED) followed at once in a row without a welcome; more wait like a failed round.
MAX_MOVES = 5
_FATAL = frozenset({"AUTH_FAILED", "AUTH_WRONG_ROLE", "VERSION_MISMATCH", "NOT_FOUND", "SESSION_FORBIDDEN"})


class SessionRef(NamedTuple):
    """A session id, its key and the cursor (last result sequence number consumed): what a later
    process needs to resume the result stream with
    ``connect(url, session=id, session_key=key, cursor=cursor)``. Keep the key as secret as a
    token: with it, anyone holding the client token can read and cancel the session."""

    id: str
    cursor: int
    key: str = ""


@dataclass(frozen=True)
class SubmitSummary:
    """What ``submit_many`` did: tasks submitted, accepted, and the refused ones with why."""

    submitted: int
    accepted: int
    rejected: list[dict[str, str]]


async def connect(
    url: "str | Sequence[str]",
    *,
    token: Optional[str] = None,
    session: Optional[str] = None,
    session_key: Optional[str] = None,
    cursor: Optional[int] = None,
    lease_ms: Optional[int] = None,
    attach_only: bool = False,
    connect_timeout: float = 30,
    max_batch: int = 2000,
) -> "Client":
    """Connects to a dispatcher and returns once the session is open.

    ``url`` is ``ws://HOST:PORT``, ``wss://HOST:PORT`` or ``HOST:PORT`` (anything else raises
    ``FalconetError('USAGE')``), or several of them (a comma-separated string or a list): they are
    dialed in turn from the first, a failed dial moving to the next at once and a full round of
    failures backing off; a lost dispatcher is left for the next one, and a dispatcher's ``MOVED``
    is followed (five times in a row at most without a welcome, then with backoff). ``session``/``cursor`` resume a session (see
    :attr:`Client.session`; resuming needs ``session_key``, the key the session was opened with,
    unless ``token`` is the administrator's: ``SESSION_FORBIDDEN`` otherwise; another live
    reader of the session gets ``SESSION_BUSY``); ``lease_ms`` makes the dispatcher cancel the session's tasks when no
    client has been connected that long; ``attach_only`` refuses (``NOT_FOUND``) a session the
    dispatcher does not know. Raises ``UNREACHABLE`` when no dispatcher answered within
    ``connect_timeout`` seconds, or the dispatcher's refusal (``AUTH_FAILED``,
    ``VERSION_MISMATCH``, ``NOT_FOUND``). After a failure nothing is left running.
    """
    client = Client(
        wire.dispatcher_urls(url),
        token=token,
        session=session,
        session_key=session_key,
        cursor=cursor,
        lease_ms=lease_ms,
        attach_only=attach_only,
        max_batch=max_batch,
    )
    await client._open(connect_timeout)
    return client


class TaskHandle:
    """A submitted task: its ``id``, its ``result()``, ``cancel()`` and ``info()``."""

    def __init__(self, client: "Client", task_id: str, waiter: "asyncio.Future[Result]") -> None:
        self._client = client
        self.id = task_id
        self._waiter = waiter

    async def result(self) -> Result:
        """Waits for the task's result (whatever its status). May be awaited more than once."""
        return await asyncio.shield(self._waiter)

    def done(self) -> bool:
        """True once the result is here (or the client closed)."""
        return self._waiter.done()

    async def cancel(self) -> bool:
        """Cancels the task; True when it was still unfinished. Its result (``cancelled``) still comes."""
        return await self._client.cancel([self.id]) > 0

    async def info(self) -> TaskInfo:
        """What the dispatcher says of the task now (see :meth:`Client.task`)."""
        return await self._client.task(self.id)

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"


class _Entry:
    __slots__ = ("seq", "result", "taken")

    def __init__(self, seq: int, result: Result, taken: bool) -> None:
        self.seq = seq
        self.result = result
        self.taken = taken


class Client:
    """A session with a dispatcher. Create it with :func:`connect`."""

    def __init__(
        self,
        url: "str | Sequence[str]",
        *,
        token: Optional[str] = None,
        session: Optional[str] = None,
        session_key: Optional[str] = None,
        cursor: Optional[int] = None,
        lease_ms: Optional[int] = None,
        attach_only: bool = False,
        max_batch: int = 2000,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        #: The dispatchers, in the order they are dialed (redirect targets join at the end).
        self.urls: list[str] = [url] if isinstance(url, str) else list(url)
        #: The same, as one string for messages.
        self.url = ",".join(self.urls)
        self._dispatcher: Optional[str] = None
        self._moved_to: Optional[str] = None
        self._token = token
        self._session_id: Optional[str] = session
        self._session_key: Optional[str] = session_key
        self._lease_ms = lease_ms
        self._attach_only = attach_only
        self._max_batch = max(1, max_batch)
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._loop = asyncio.get_running_loop()
        self._ended: Optional[FalconetError] = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._run_task: Optional[asyncio.Task[None]] = None
        self._ws: Any = None
        self._up = False
        self._resumed = False
        self._last_error: Optional[str] = None
        self._max_frame = 16 * 1024 * 1024
        self._heartbeat_s = 5.0
        self._remaining = 0
        # outbound
        self._out: list[bytes] = []
        self._out_event = asyncio.Event()
        self._out_idle = asyncio.Event()
        self._out_idle.set()
        # submits
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)
        self._refs = itertools.count(1)
        self._batch: list[dict[str, Any]] = []
        self._batch_queued = False
        self._unacked: dict[int, list[dict[str, Any]]] = {}
        self._unacked_count = 0
        self._awaiting: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._accept_waiters: dict[str, asyncio.Future[None]] = {}
        self._detached: set[str] = set()
        self._settle_waiters: list[asyncio.Future[None]] = []
        self._accepted_count = 0
        self._rejected: list[dict[str, str]] = []
        # requests (cancel, query, sessions): resent after a reconnect until answered
        self._requests: dict[int, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        # results
        self._cursor = self._last_seq = cursor or 0
        self._acked_sent = cursor or 0
        self._window: collections.deque[_Entry] = collections.deque()
        self._buffer: collections.deque[_Entry] = collections.deque()
        self._readers: collections.deque[asyncio.Future[Optional[_Entry]]] = collections.deque()
        self._results_closed = False
        self._ack_timer: Optional[asyncio.TimerHandle] = None
        #: Frames received and decoded with the plain decoder (no extension type seen).
        self.frames_received = 0
        #: Frames that could not be decoded (the connection was dropped and redialed).
        self.bad_frames = 0
        #: Results received again after a reconnect (already here: dropped).
        self.replays_dropped = 0
        #: Connections opened (welcomes received).
        self.connections = 0

    # ---- public API -----------------------------------------------------------------------------

    @property
    def session(self) -> SessionRef:
        """The session id, cursor and key: what a later process needs to resume this result stream."""
        return SessionRef(self._session_id or "", self._cursor, self._session_key or "")

    @property
    def dispatcher(self) -> Optional[str]:
        """The URL of the dispatcher the client is connected to (None while it is not)."""
        return self._dispatcher if self._up else None

    @property
    def connected(self) -> bool:
        """True while a connection is up (False while reconnecting, and after close())."""
        return self._up

    @property
    def resumed(self) -> bool:
        """True when the dispatcher knew the session at the last welcome."""
        return self._resumed

    @property
    def in_flight(self) -> int:
        """Tasks submitted through this client whose results have not arrived yet."""
        return len(self._awaiting)

    @property
    def outstanding(self) -> int:
        """Results not yet handed out: buffered here, still to come, or of tasks not yet accepted."""
        return self._remaining + len(self._buffer) + len(self._batch) + self._unacked_count

    async def submit(self, spec: TaskLike) -> Result:
        """Submits one task and returns its result, whatever its status.

        Raises ``FalconetError`` with ``TASK_INVALID`` (refused by the dispatcher),
        ``FRAME_TOO_LARGE`` (no frame can carry it), ``TASK_DUPLICATE`` (this session finished that
        id before and its result was handed out) or ``CLIENT_CLOSED``. Submitting an id still
        pending here shares the first one's result.
        """
        self._check()
        wire_spec = to_wire_spec(spec)
        task_id = wire_spec.get("id")
        if task_id is not None and (task_id in self._waiters or task_id in self._awaiting):
            return await asyncio.shield(self._waiter(task_id))
        spec_id = self._enqueue(wire_spec)
        return await asyncio.shield(self._waiter(spec_id))

    async def start(self, spec: TaskLike) -> TaskHandle:
        """Submits one task and returns its :class:`TaskHandle` once the dispatcher accepted it
        (it is durable there). Raises like :meth:`submit` when it is refused."""
        self._check()
        wire_spec = to_wire_spec(spec)
        task_id = wire_spec.get("id")
        if task_id is not None and task_id in self._waiters:
            return TaskHandle(self, task_id, self._waiters[task_id])
        task_id = self._enqueue(wire_spec)
        waiter = self._waiter(task_id)
        accepted = self._accept_waiters.setdefault(task_id, self._loop.create_future())
        await asyncio.shield(accepted)
        return TaskHandle(self, task_id, waiter)

    async def submit_many(
        self,
        tasks: Union[Iterable[TaskLike], AsyncIterable[TaskLike]],
        *,
        max_in_flight: int = 10_000,
        until: str = "finished",
    ) -> SubmitSummary:
        """Submits tasks from an iterable (or async iterable) with backpressure: at most
        ``max_in_flight`` are in flight, and the iterable is not read further until some come back.

        Results arrive on :meth:`results`. Returns when every task is accepted and (with
        ``until="finished"``, the default) has its result here; ``until="accepted"`` returns once
        the dispatcher has them all. Raises ``CLIENT_CLOSED`` if the client closes first.
        """
        self._check()
        if until not in ("finished", "accepted"):
            raise FalconetError("USAGE", f"until must be 'finished' or 'accepted', not {until!r}")
        max_in_flight = max(1, max_in_flight)
        if until == "finished":
            in_flight = lambda: len(self._awaiting)  # noqa: E731
        else:
            in_flight = lambda: len(self._batch) + self._unacked_count  # noqa: E731
        start_accepted = self._accepted_count
        start_rejected = len(self._rejected)
        submitted = 0

        async def one(spec: TaskLike) -> None:
            nonlocal submitted
            while in_flight() >= max_in_flight:
                await self._next_settle()
            task_id = self._enqueue(to_wire_spec(spec))
            if until == "accepted":
                self._detached.add(task_id)
            submitted += 1
            if not self._batch:
                # A full batch was just handed over: let it go out before packing the next.
                await asyncio.sleep(0)

        if hasattr(tasks, "__aiter__"):
            async for spec in tasks:  # type: ignore[union-attr]
                await one(spec)
        else:
            for spec in tasks:  # type: ignore[union-attr]
                if in_flight() < max_in_flight and len(self._batch) + 1 < self._max_batch:
                    task_id = self._enqueue(to_wire_spec(spec))
                    if until == "accepted":
                        self._detached.add(task_id)
                    submitted += 1
                else:
                    await one(spec)
        while in_flight() > 0:
            await self._next_settle()
        return SubmitSummary(submitted, self._accepted_count - start_accepted, self._rejected[start_rejected:])

    async def results(self) -> AsyncIterator[Result]:
        """Every result of the session not yet handed out (and not taken by ``submit()`` or a
        handle), in sequence order, as it arrives. Concurrent iterators share the stream.

        A result counts as consumed (and is acknowledged) when its iterator is asked for the next
        one, or closed (``break`` out of ``async for`` closes it). The iterator ends after
        :meth:`close`, once it has handed out what was already received.
        """
        held: Optional[_Entry] = None
        try:
            while True:
                if held is not None:
                    self._release(held)
                    held = None
                if self._buffer:
                    entry = self._buffer.popleft()
                elif self._results_closed:
                    return
                else:
                    fut: asyncio.Future[Optional[_Entry]] = self._loop.create_future()
                    self._readers.append(fut)
                    try:
                        got = await fut
                    except asyncio.CancelledError:
                        # Abandoned (a timeout around the iterator): nothing it was given is lost.
                        try:
                            self._readers.remove(fut)
                        except ValueError:
                            pass
                        if fut.done() and not fut.cancelled() and fut.result() is not None:
                            self._buffer.appendleft(fut.result())  # type: ignore[arg-type]
                        raise
                    if got is None:
                        return
                    entry = got
                held = entry
                yield entry.result
        finally:
            if held is not None:
                self._release(held)

    async def cancel(self, ids: Iterable[str], *, session: Optional[str] = None, key: Optional[str] = None, all: bool = False) -> int:
        """Cancels tasks by id (of this session, or of ``session`` with its ``key``; ``"*"``
        searches every session, for the administrator token only; ``all=True`` cancels every
        unfinished task of the session). Returns how many were unfinished; their results
        (``cancelled``) still come. Raises ``SESSION_FORBIDDEN`` or ``ADMIN_REQUIRED`` when refused."""
        ids = list(ids)
        self._flush_batch()  # submits made before go first, so the cancel finds them
        msg: dict[str, Any] = {"t": "cancel", "ids": ids}
        if session is not None:
            msg["session"] = session
        if key is not None:
            msg["key"] = key
        if all:
            msg["all"] = True
        reply = await self._request(msg)
        if reply.get("ok") is False and reply.get("error"):
            raise FalconetError.from_wire(reply["error"])
        return int(reply.get("count") or 0)

    async def task(self, task_id: str, *, session: Optional[str] = None) -> TaskInfo:
        """What the dispatcher says of one task now: queued (with why it waits, when known),
        running (attempt, executor), or how it ended with its result. Searches every session, or
        only ``session``. Raises ``FalconetError('NOT_FOUND')`` when no session has the id."""
        infos = await self.tasks(ids=[task_id], session=session)
        for info in infos:
            if info.id == task_id:
                return info
        raise FalconetError("NOT_FOUND", f"no task {task_id}" + (f" in session {session}" if session else ""))

    async def tasks(
        self,
        *,
        ids: Optional[Iterable[str]] = None,
        session: Optional[str] = None,
        state: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> list[TaskInfo]:
        """Queries tasks of every session, or of ``session``: by ``ids``, or by listing (``state``:
        ``queued``, ``running``, a final status, or ``"finished"`` for any end; newest first, at
        most ``limit``). Use ``session=client.session.id`` for this client's own tasks."""
        self._flush_batch()
        msg: dict[str, Any] = {"t": "query"}
        if ids is not None:
            msg["ids"] = list(ids)
        if session:
            msg["session"] = session
        if state is not None:
            msg["state"] = state
        if limit is not None:
            msg["limit"] = limit
        reply = await self._request(msg)
        return [TaskInfo.from_wire(t) for t in reply.get("tasks", [])]

    async def sessions(self) -> list[SessionInfo]:
        """The dispatcher's sessions."""
        reply = await self._request({"t": "sessions"})
        return [SessionInfo.from_wire(s) for s in reply.get("sessions", [])]

    async def close(self) -> None:
        """Sends pending submits and acknowledgements, then closes the connection. What is still
        pending (``submit()``, handles, ``submit_many()``, requests) fails with ``CLIENT_CLOSED``;
        the tasks stay in the session, and a later client can reattach to collect their results."""
        if self._ended is None:
            self._flush_batch()
            self._send_ack()
            if self._up and self._out:
                try:
                    await asyncio.wait_for(self._out_idle.wait(), 2)
                except asyncio.TimeoutError:
                    pass
            self._end(FalconetError("CLIENT_CLOSED", "the client was closed"))
        task = self._run_task
        if task is not None and task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                pass

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- connection -----------------------------------------------------------------------------

    async def _open(self, timeout: float) -> None:
        self._run_task = self._loop.create_task(self._run(), name="falconet-client")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            why = f" (last error: {self._last_error})" if self._last_error else ""
            err = FalconetError("UNREACHABLE", f"no dispatcher answered at {self.url} within {timeout:g} s{why}")
            self._end(err)
            await self.close()
            raise err from None
        except BaseException:
            if self._ended is None:
                self._end(FalconetError("CLIENT_CLOSED", "connect was interrupted"))
            await self.close()
            raise

    def _hello(self) -> dict[str, Any]:
        hello: dict[str, Any] = {"t": "hello", "v": wire.PROTOCOL_VERSION, "role": "client", "caps": ["batch"]}
        if self._token:
            hello["token"] = self._token
        if self._session_id:
            hello["session"] = self._session_id
            if self._cursor > 0:
                hello["cursor"] = self._cursor
        if self._session_key:
            hello["key"] = self._session_key
        if self._lease_ms is not None:
            hello["leaseMs"] = self._lease_ms
        if self._attach_only:
            hello["attachOnly"] = True
        return hello

    async def _run(self) -> None:
        # Failover as protocol/dial-plan.ts does it: a failed dial moves to the next URL at once,
        # only a full round of failures backs off; a loss moves on at once; MOVED is followed at
        # once MAX_MOVES times in a row without a welcome, then with backoff.
        rounds = 0  # full rounds failed in a row: the backoff's exponent
        failed = 0  # failed dials in this round
        moves = 0  # redirects in a row without a welcome
        added = 0
        pos = -1  # index in self.urls of the URL dialed last
        target: Optional[str] = None  # where MOVED sent us

        def backoff() -> float:
            nonlocal rounds
            delay = random.random() * min(self._max_backoff, self._initial_backoff * 2 ** min(rounds, 30))
            rounds += 1
            return delay

        while self._ended is None:
            url = target if target is not None else self.urls[(pos + 1) % len(self.urls)]
            target = None
            if url in self.urls:
                pos = self.urls.index(url)
            self._moved_to = None
            ws = None
            try:
                ws = await websockets.connect(
                    url,
                    max_size=None,
                    ping_interval=None,
                    compression=None,
                    open_timeout=10,
                    close_timeout=1,
                    max_queue=None,
                )
                if self._ended is not None:
                    break
                self._ws = ws
                self._dispatcher = url
                self._last_error = None
                await self._serve(ws)
                if self._last_error is None:
                    self._last_error = f"connection closed ({ws.close_code} {ws.close_reason})".strip()
            except asyncio.CancelledError:
                raise
            except FalconetError as e:
                self._end(e)
            except Exception as e:  # a socket error, a refused upgrade: dial the next one
                why = f"{type(e).__name__}: {e}"
                self._last_error = f"{url}: {why}" if len(self.urls) > 1 else why
            finally:
                was_up = self._up
                self._up = False
                self._ws = None
                self._out.clear()
                self._out_idle.set()
                if ws is not None:
                    try:
                        await asyncio.wait_for(ws.close(), 1)
                    except BaseException:
                        pass
            if self._ended is not None:
                break
            delay = 0.0
            if was_up:
                rounds = failed = moves = 0
            if self._moved_to is not None:
                target = self._moved_to
                if target not in self.urls and added < 16:
                    self.urls.append(target)
                    added += 1
                moves += 1
                if moves > MAX_MOVES:
                    delay = backoff()
                log.info("falconet: %s moved us to %s", url, target)
            elif was_up:
                nxt = self.urls[(pos + 1) % len(self.urls)]
                if nxt == url:
                    delay = backoff()  # only this one: a short jittered wait, as before lists
                if self._ended is None:
                    log.info("falconet: connection to %s lost (%s); dialing %s", url, self._last_error, nxt)
            else:
                failed += 1
                if failed >= len(self.urls):
                    failed = 0
                    delay = backoff()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _serve(self, ws: Any) -> None:
        await ws.send(wire.frames([wire.pack(self._hello())], self._max_frame).__next__())
        writer: Optional[asyncio.Task[None]] = None
        beat: Optional[asyncio.Task[None]] = None
        try:
            silence = 30.0
            while True:
                try:
                    data = await asyncio.wait_for(ws.recv(), silence)
                except asyncio.TimeoutError:
                    self._last_error = f"the dispatcher was silent for {silence:g} s"
                    return
                except websockets.ConnectionClosed:
                    return
                try:
                    messages = wire.decode(data)
                except Exception as e:
                    self.bad_frames += 1
                    self._last_error = f"undecodable frame: {e}"
                    log.warning("falconet: %s; reconnecting", self._last_error)
                    return
                self.frames_received += 1
                for m in messages:
                    if not isinstance(m, dict):
                        continue
                    t = m.get("t")
                    if t == "error" and m.get("ref") is None:
                        err = FalconetError.from_wire(m)
                        if err.code == "MOVED":
                            # The session lives on another dispatcher: `to` says which.
                            to = m.get("to")
                            try:
                                self._moved_to = wire.dispatcher_url(to) if isinstance(to, str) else None
                            except FalconetError:
                                self._moved_to = None
                            self._last_error = f"MOVED to {to!r}: {err.message}"
                            return
                        # Another connection reads the session: a mistake at the first hello (a
                        # second reader); after a loss it is our own old connection, which the
                        # dispatcher drops after three silent heartbeats, so dial again.
                        if err.code in _FATAL or (err.code == "SESSION_BUSY" and self.connections == 0):
                            raise err
                        self._last_error = str(err)
                        if not self._up:
                            return  # refused before welcome (SHUTTING_DOWN, HELLO_TIMEOUT): dial again
                        continue
                    if t == "welcome" and not self._up:
                        self._max_frame = int(m.get("maxFrameBytes") or self._max_frame)
                        self._heartbeat_s = max(0.01, (m.get("heartbeatMs") or 5000) / 1000)
                        silence = max(1.0, 3 * self._heartbeat_s)
                        self._up = True
                        self.connections += 1
                        writer = self._loop.create_task(self._writer(ws))
                        beat = self._loop.create_task(self._heartbeats())
                        self._on_up(m)
                        continue
                    if t == "hb" or not self._up:
                        continue
                    self._on_message(m)
        finally:
            for task in (writer, beat):
                if task is not None:
                    task.cancel()

    async def _writer(self, ws: Any) -> None:
        while True:
            await self._out_event.wait()
            self._out_event.clear()
            while self._out:
                out, self._out = self._out, []
                for frame in wire.frames(out, self._max_frame):
                    await ws.send(frame)
            self._out_idle.set()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            self._send({"t": "hb", "at": int(time.time() * 1000)})

    def _send(self, msg: dict[str, Any]) -> bool:
        """Queues a message for the current connection; False (dropped) when not connected.
        Raises FalconetError FRAME_TOO_LARGE for a message no frame can carry."""
        if not self._up:
            return False
        encoded = wire.pack(msg)
        if not wire.fits(encoded, self._max_frame):
            raise FalconetError(
                "FRAME_TOO_LARGE", f"one {msg.get('t')} message of {len(encoded)} bytes exceeds the {self._max_frame}-byte frame limit"
            )
        self._out.append(encoded)
        self._out_idle.clear()
        self._out_event.set()
        return True

    # ---- inbound ---------------------------------------------------------------------------------

    def _on_up(self, w: Mapping[str, Any]) -> None:
        forgotten = self._session_id is not None and not w.get("resumed")
        self._session_id = w["session"]
        if w.get("key"):
            self._session_key = w["key"]
        self._resumed = bool(w.get("resumed"))
        self._remaining = int(w.get("unfinished", 0)) + int(w.get("unacked", 0))
        self._rebase(int(w.get("cursor", 0)), forgotten)
        self._acked_sent = 0 if forgotten else max(self._acked_sent, int(w.get("cursor", 0)))
        # Resend what the dispatcher may not have: unacknowledged submits (ids make this idempotent)
        # and, if it lost the session (an in-memory dispatcher restarted), everything still awaited.
        if forgotten:
            self._unacked.clear()
            self._unacked_count = 0
            in_batch = {s["id"] for s in self._batch}
            self._batch.extend(s for i, s in self._awaiting.items() if i not in in_batch)
        for ref, tasks in list(self._unacked.items()):
            self._send_submit(ref, tasks)
        self._flush_batch()
        for ref, (msg, fut) in list(self._requests.items()):
            self._send_request(ref, msg, fut)
        if not self._ready.done():
            self._ready.set_result(None)

    def _on_message(self, m: Mapping[str, Any]) -> None:
        t = m.get("t")
        if t == "result":
            self._remaining = int(m.get("remaining", 0))
            raw = m.get("result") or {}
            result = Result.from_wire(raw)
            claimed = result.id in self._waiters
            if self._receive(int(m["seq"]), result, claimed):
                self._awaiting.pop(result.id, None)
                w = self._waiters.pop(result.id, None)
                if w is not None and not w.done():
                    w.set_result(result)
                self._settle()
        elif t == "accepted":
            self._remaining = int(m.get("remaining", 0))
            self._on_accepted(m)
        elif t in ("reply", "tasks", "sessions"):
            req = self._requests.pop(m.get("ref"), None)  # type: ignore[arg-type]
            if req is not None and not req[1].done():
                req[1].set_result(dict(m))
        elif t == "error":
            ref = m.get("ref")
            req = self._requests.pop(ref, None) if ref is not None else None  # type: ignore[arg-type]
            if req is not None and not req[1].done():
                req[1].set_exception(FalconetError.from_wire(m))
            elif ref is not None and ref in self._unacked:
                # A submit refused as a whole (SHUTTING_DOWN): it is resent after the reconnect.
                log.info("falconet: submit %s refused: %s %s", ref, m.get("code"), m.get("message"))
        # other types (from a newer dispatcher) are skipped

    def _on_accepted(self, m: Mapping[str, Any]) -> None:
        tasks = self._unacked.pop(m.get("ref"), None)  # type: ignore[arg-type]
        if tasks is None:
            return
        self._unacked_count -= len(tasks)
        self._accepted_count += int(m.get("accepted", 0))
        refused: set[int] = set()
        for r in m.get("rejected") or []:
            index = r.get("index", -1)
            refused.add(index)
            task_id = tasks[index]["id"] if 0 <= index < len(tasks) else r.get("id", "")
            self._refuse(task_id, FalconetError(r.get("code", "TASK_INVALID"), r.get("message", "")))
        for i, spec in enumerate(tasks):
            if i in refused:
                continue
            task_id = spec["id"]
            if task_id in self._detached:
                self._detached.discard(task_id)
                self._awaiting.pop(task_id, None)
            a = self._accept_waiters.pop(task_id, None)
            if a is not None and not a.done():
                a.set_result(None)
        for k in m.get("known") or []:
            if k.get("finished"):
                self._finished_before(k["id"])
        self._settle()

    # ---- submits ---------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._ended is not None:
            raise self._ended

    def _waiter(self, task_id: str) -> "asyncio.Future[Result]":
        w = self._waiters.get(task_id)
        if w is None:
            w = self._waiters[task_id] = self._loop.create_future()
        return w

    def _enqueue(self, spec: dict[str, Any]) -> str:
        self._check()
        if spec.get("id") is None:
            spec = dict(spec)
            spec["id"] = f"{self._prefix}-{next(self._counter)}"
        task_id = spec["id"]
        self._awaiting[task_id] = spec
        self._batch.append(spec)
        if len(self._batch) >= self._max_batch:
            self._flush_batch()
        elif not self._batch_queued:
            self._batch_queued = True
            self._loop.call_soon(self._flush_batch)
        return task_id

    def _flush_batch(self) -> None:
        self._batch_queued = False
        if not self._batch or self._ended is not None:
            return
        tasks, self._batch = self._batch, []
        ref = next(self._refs)
        self._unacked[ref] = tasks
        self._unacked_count += len(tasks)
        self._send_submit(ref, tasks)

    def _send_submit(self, ref: int, tasks: list[dict[str, Any]]) -> None:
        """Sends submit ``ref`` (kept in _unacked: not connected, it goes out after the welcome).
        Too large for a frame: split in halves, down to one task, which is refused."""
        try:
            self._send({"t": "submit", "ref": ref, "tasks": tasks})
        except FalconetError as e:
            self._unacked.pop(ref, None)
            self._unacked_count -= len(tasks)
            if len(tasks) == 1:
                self._refuse(tasks[0]["id"], FalconetError("FRAME_TOO_LARGE", f"task {tasks[0]['id']} is too large to send: {e.message}"))
                self._settle()
                return
            half = len(tasks) // 2
            for part in (tasks[:half], tasks[half:]):
                r = next(self._refs)
                self._unacked[r] = part
                self._unacked_count += len(part)
                self._send_submit(r, part)

    def _refuse(self, task_id: str, err: FalconetError) -> None:
        self._awaiting.pop(task_id, None)
        self._detached.discard(task_id)
        self._rejected.append({"id": task_id, "code": err.code, "message": err.message})
        for table in (self._waiters, self._accept_waiters):
            w = table.pop(task_id, None)
            if w is not None and not w.done():
                w.set_exception(err)
                w.exception()  # retrieved: no "never retrieved" warning when nobody awaits it

    def _finished_before(self, task_id: str) -> None:
        """The dispatcher had this id, finished: its result will not come again."""
        self._awaiting.pop(task_id, None)
        w = self._waiters.pop(task_id, None)
        if w is None or w.done():
            return
        for entry in self._buffer:
            if entry.result.id == task_id:
                self._buffer.remove(entry)
                self._release(entry)
                w.set_result(entry.result)
                return
        w.set_exception(
            FalconetError(
                "TASK_DUPLICATE",
                f"task {task_id} already finished in session {self._session_id} and its result was handed out before; "
                "submit it under a new id to run it again",
            )
        )
        w.exception()

    async def _next_settle(self) -> None:
        self._check()
        fut: asyncio.Future[None] = self._loop.create_future()
        self._settle_waiters.append(fut)
        await fut

    def _settle(self) -> None:
        waiting, self._settle_waiters = self._settle_waiters, []
        for f in waiting:
            if not f.done():
                f.set_result(None)

    # ---- requests --------------------------------------------------------------------------------

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._check()
        ref = next(self._refs)
        msg["ref"] = ref
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._requests[ref] = (msg, fut)
        self._send_request(ref, msg, fut)
        try:
            return await fut
        finally:
            self._requests.pop(ref, None)

    def _send_request(self, ref: int, msg: dict[str, Any], fut: "asyncio.Future[dict[str, Any]]") -> None:
        try:
            self._send(msg)  # not connected: sent after the next welcome
        except FalconetError as e:
            self._requests.pop(ref, None)
            if not fut.done():
                fut.set_exception(e)

    # ---- results ---------------------------------------------------------------------------------

    def _rebase(self, cursor: int, forgotten: bool) -> None:
        if forgotten:
            self._window.clear()
            self._cursor = self._last_seq = 0
            return
        if cursor <= self._cursor:
            return
        self._cursor = cursor
        self._last_seq = max(self._last_seq, cursor)
        self._window = collections.deque(e for e in self._window if e.seq > cursor)

    def _receive(self, seq: int, result: Result, claimed: bool) -> bool:
        if seq <= self._last_seq:
            self.replays_dropped += 1
            return False  # a replay of what this process already has
        self._last_seq = seq
        entry = _Entry(seq, result, claimed)
        self._window.append(entry)
        if claimed:
            self._advance()
            return True
        while self._readers:
            reader = self._readers.popleft()
            if not reader.done():
                reader.set_result(entry)
                return True
        self._buffer.append(entry)
        return True

    def _release(self, entry: _Entry) -> None:
        entry.taken = True
        self._advance()

    def _advance(self) -> None:
        before = self._cursor
        while self._window and self._window[0].taken:
            self._cursor = self._window.popleft().seq
        if self._cursor != before:
            self._schedule_ack()

    def _schedule_ack(self) -> None:
        if self._cursor - self._acked_sent >= 1000:
            self._send_ack()
        elif self._ack_timer is None and self._ended is None:
            self._ack_timer = self._loop.call_later(0.05, self._send_ack)

    def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        cursor = self._cursor
        if cursor > self._acked_sent and self._send({"t": "ack", "cursor": cursor}):
            self._acked_sent = cursor

    # ---- the end ---------------------------------------------------------------------------------

    def _end(self, err: FalconetError) -> None:
        """The one way a client ends: everything pending fails with ``err``; nothing keeps running."""
        if self._ended is not None:
            return
        self._ended = err
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if not self._ready.done():
            self._ready.set_exception(err)
            self._ready.exception()
        self._batch = []
        for table in (self._waiters, self._accept_waiters):
            for w in table.values():
                if not w.done():
                    w.set_exception(err)
                    w.exception()
            table.clear()
        for _, fut in self._requests.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()
        self._requests.clear()
        for f in self._settle_waiters:
            if not f.done():
                f.set_exception(err)
                f.exception()
        self._settle_waiters = []
        self._results_closed = True
        while self._readers:
            r = self._readers.popleft()
            if not r.done():
                r.set_result(None)
        ws = self._ws
        if ws is not None:
            self._loop.create_task(ws.close())
        elif self._run_task is not None and self._run_task is not asyncio.current_task():
            self._run_task.cancel()  # dialing or waiting to dial again: stop now
