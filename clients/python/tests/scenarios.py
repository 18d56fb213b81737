"""Scenarios of the Python client against a real dispatcher, run by test/python-client.test.ts.

    /usr/bin/python3 scenarios.py SCENARIO URL [ARGS...]

Each scenario asserts with plain ``assert``, has its own deadline (an alarm kills it), and exits 0
when it passed. Lines starting with ``@@`` talk to the node test: ``@@kill`` / ``@@restart`` ask
it to kill -9 / restart the dispatcher (it answers on stdin), ``@@json {...}`` reports figures.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import sys
import time

import msgpack
import websockets

import falconet
from falconet import FalconetError, Result, Task, TaskInfo


def report(**kv: object) -> None:
    print("@@json " + json.dumps(kv), flush=True)


async def ask_node(line: str, expect: str) -> None:
    """Asks the node test to do something to the dispatcher; waits for its answer on stdin."""
    print(line, flush=True)
    answer = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    assert answer.strip() == expect, f"node answered {answer!r} to {line}"


async def expect_error(code: str, aw) -> FalconetError:  # type: ignore[no-untyped-def]
    try:
        await aw
    except FalconetError as e:
        assert e.code == code, f"expected {code}, got {e!r}"
        return e
    raise AssertionError(f"expected FalconetError {code}")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- scenarios ------------------------------------------------------------------------------------


async def basic(url: str) -> None:
    host_port = url.removeprefix("ws://")
    c = await falconet.connect(host_port, connect_timeout=10)  # HOST:PORT without a scheme
    sid = c.session.id
    assert sid and c.session.cursor == 0

    r = await c.submit({"cmd": ["echo", "hello", "python"]})
    assert isinstance(r, Result)
    assert r.ok and r.status == "succeeded" and r.exit_code == 0, r
    assert r.stdout == "hello python\n", r.stdout
    assert r.timings.finished >= r.timings.submitted > 0

    r = await c.submit(Task(cmd=["sh", "-c", "echo oops >&2; exit 3"], id="fails"))
    assert r.id == "fails" and r.status == "failed" and r.exit_code == 3, r
    assert r.error and r.error["code"] == "TASK_FAILED" and r.stderr == "oops\n", r

    # A bad task is a FalconetError with the wire's code, not a result.
    e = await expect_error("TASK_INVALID", c.submit({"cmd": []}))
    assert e.retryable is False and e.message
    e = await expect_error("TASK_INVALID", c.submit({"builtin": "noop", "bogus": 1}))
    await expect_error("TASK_INVALID", c.start({"cmd": ["true"], "max_attempts": 0}))

    # Handles: start, query, cancel, result.
    h = await c.start({"builtin": "sleep", "ms": 60_000, "id": "long"})
    assert h.id == "long"
    info = await c.task("long")
    assert isinstance(info, TaskInfo) and info.session == sid and info.state in ("queued", "running"), info
    assert await h.cancel() is True
    r = await asyncio.wait_for(h.result(), 10)
    assert r.status == "cancelled" and r.error["code"] == "TASK_CANCELLED", r
    assert (await h.result()) is r  # awaitable again
    info = await c.task("long")
    assert info.state == "cancelled" and info.finished, info

    # cancel(ids) on a task awaited through submit().
    waiting = asyncio.ensure_future(c.submit({"builtin": "sleep", "ms": 60_000, "id": "long2"}))
    await asyncio.sleep(0.2)
    assert await c.cancel(["long2", "no-such-task"]) == 1
    assert (await asyncio.wait_for(waiting, 10)).status == "cancelled"
    assert await c.cancel(["long2"]) == 0  # finished already

    # task(id) of a finished task, a missing one, listings and sessions.
    done = await c.task("fails")
    assert done.state == "failed" and done.attempt >= 1, done
    assert done.result is None or done.result.exit_code == 3
    await expect_error("NOT_FOUND", c.task("no-such-task"))
    await expect_error("NOT_FOUND", c.task("fails", session="no-such-session"))
    listed = await c.tasks(session=sid, state="finished")
    assert {"fails", "long", "long2"} <= {t.id for t in listed}, [t.id for t in listed]
    sessions = await c.sessions()
    mine = [s for s in sessions if s.id == sid]
    assert mine and mine[0].connected and mine[0].submitted >= 4, sessions

    # Addresses: a wrong one fails at once (USAGE), an unreachable one after the timeout.
    for bad in ("http://127.0.0.1:1", "no-port", "ws://", "127.0.0.1:99999"):
        await expect_error("USAGE", falconet.connect(bad))
    t0 = time.monotonic()
    e = await expect_error("UNREACHABLE", falconet.connect(f"127.0.0.1:{closed_port()}", connect_timeout=1))
    assert 0.9 <= time.monotonic() - t0 < 5 and e.retryable and "127.0.0.1" in e.message

    # close(): what is still pending fails with CLIENT_CLOSED; the client refuses more work.
    pending = asyncio.ensure_future(c.submit({"builtin": "sleep", "ms": 60_000, "id": "left"}))
    handle = await c.start({"builtin": "sleep", "ms": 60_000, "id": "left2"})
    await asyncio.sleep(0.1)
    await c.close()
    await expect_error("CLIENT_CLOSED", pending)
    await expect_error("CLIENT_CLOSED", handle.result())
    await expect_error("CLIENT_CLOSED", c.submit({"builtin": "noop"}))

    # A second client (another session) finds them and cancels them for every session.
    c2 = await falconet.connect(url)
    assert (await c2.task("left")).session == sid
    assert await c2.cancel(["left", "left2"], session=sid, key=c.session.key) == 2
    await c2.close()


async def many(url: str, n: int = 1000) -> None:
    c = await falconet.connect(url)
    peak = 0

    def specs():  # type: ignore[no-untyped-def]
        nonlocal peak
        for i in range(n):
            peak = max(peak, c.in_flight)
            yield {"builtin": "noop", "id": f"n{i}"}

    seen: list[str] = []

    async def read() -> None:
        async for r in c.results():
            assert r.ok, r
            seen.append(r.id)
            if len(seen) == n:
                break

    reader = asyncio.ensure_future(read())
    summary = await c.submit_many(specs(), max_in_flight=200)
    await asyncio.wait_for(reader, 60)
    assert summary.submitted == n and summary.accepted == n and summary.rejected == [], summary
    assert len(seen) == n and len(set(seen)) == n, "each result exactly once"
    assert peak <= 200, f"backpressure: {peak} in flight"
    assert c.in_flight == 0
    # Refused tasks in a batch are reported, the rest run.
    summary = await c.submit_many([{"builtin": "noop"}, {"cmd": []}, {"builtin": "noop"}])
    assert summary.accepted == 2 and [r["code"] for r in summary.rejected] == ["TASK_INVALID"], summary
    await c.close()


async def resume(url: str) -> None:
    c = await falconet.connect(url)
    sid = c.session.id
    first = [{"builtin": "sleep", "ms": 40, "id": f"r{i}"} for i in range(150)]
    later = [{"builtin": "noop", "id": f"s{i}"} for i in range(50)]
    seen: list[str] = []
    summary = await c.submit_many(first, until="accepted")
    assert summary.accepted == 150
    async with contextlib.aclosing(c.results()) as results:
        async for r in results:
            assert r.ok, r
            seen.append(r.id)
            if len(seen) == 20:
                # Results arriving meanwhile wait here unread, so unacknowledged: the restarted
                # dispatcher sends them again, and the client must hand each out once.
                await asyncio.sleep(0.5)
                buffered_at_kill = len(c._buffer)
                assert buffered_at_kill, "results buffered while the application is busy"
                await ask_node("@@kill", "killed")  # kill -9 of the dispatcher
                # Submitted while the dispatcher is down: resent after the reconnect.
                tasks = [asyncio.ensure_future(c.submit(t)) for t in later]
                await asyncio.sleep(0.3)
                assert not c.connected
                await ask_node("@@restart", "restarted")  # same port, same data dir
                # Reconnected while those results are still unread: they come again (unacked).
                while not c.connected:
                    await asyncio.sleep(0.02)
            if len(seen) == len(first):
                break
    assert len(seen) == len(set(seen)), f"duplicates: {len(seen) - len(set(seen))}"
    done = await asyncio.gather(*tasks)
    assert all(r.ok for r in done)
    # submit() results are theirs, not the stream's: the stream has the first 150 only.
    assert set(seen) == {t["id"] for t in first}, len(seen)
    assert c.connections >= 2 and c.resumed and c.session.id == sid, (c.connections, c.resumed)
    report(buffered_at_kill=buffered_at_kill, replays_dropped=c.replays_dropped)
    assert c.replays_dropped > 0, "the restarted dispatcher sent the unacknowledged results again"

    # Another process resumes the session at its cursor: the rest, each once.
    await c.submit_many([{"builtin": "sleep", "ms": 30, "id": f"t{i}"} for i in range(40)], until="accepted")
    got: list[str] = []
    async with contextlib.aclosing(c.results()) as results:
        async for r in results:
            got.append(r.id)
            if len(got) == 10:
                break
    ref = c.session
    assert len(ref.key) >= 16, ref
    await c.close()
    c2 = await falconet.connect(url, session=ref.id, session_key=ref.key, cursor=ref.cursor)
    assert c2.resumed and c2.session.id == sid
    async with contextlib.aclosing(c2.results()) as results:
        async for r in results:
            got.append(r.id)
            if len(got) == 40:
                break
    assert sorted(got) == sorted(f"t{i}" for i in range(40)), f"{len(got)} results, {len(set(got))} distinct"
    # attach_only to a session the dispatcher does not know: NOT_FOUND.
    await expect_error("NOT_FOUND", falconet.connect(url, session="never-was", attach_only=True, connect_timeout=5))
    await c2.close()


def executor_adapter(url: str) -> None:
    with falconet.Executor(url) as ex:
        futures = {ex.submit(cmd=["echo", str(i)]): i for i in range(30)}
        for f in concurrent.futures.as_completed(futures, timeout=60):
            r = f.result()
            assert isinstance(r, Result) and r.ok and r.stdout == f"{futures[f]}\n", r
        assert [r.stdout for r in ex.map([{"cmd": ["echo", "a"]}, Task(cmd=["echo", "b"])])] == ["a\n", "b\n"]
        r = ex.submit(builtin="noop", id="named").result(30)
        assert r.id == "named" and r.ok
        bad = ex.submit(cmd=[])
        e = bad.exception(30)
        assert isinstance(e, FalconetError) and e.code == "TASK_INVALID", e
        # Cancelling the future cancels the task on the dispatcher.
        slow = ex.submit(builtin="sleep", ms=60_000, id="slow")
        time.sleep(0.3)
        assert slow.cancel()
        deadline = time.monotonic() + 10
        while True:
            info = asyncio.run_coroutine_threadsafe(ex.client.task("slow"), ex._loop).result(10)
            if info.state == "cancelled":
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        last = ex.submit(builtin="sleep", ms=200)
    assert last.done() and last.result().ok  # shutdown(wait=True) waited for it
    try:
        ex.submit(builtin="noop")
        raise AssertionError("submit after shutdown")
    except RuntimeError:
        pass
    try:
        falconet.Executor("http://nowhere")
        raise AssertionError("a bad URL")
    except FalconetError as e:
        assert e.code == "USAGE"
    # shutdown(wait=False): pending futures fail with CLIENT_CLOSED.
    ex = falconet.Executor(url)
    f = ex.submit(builtin="sleep", ms=60_000, id="abandoned")
    time.sleep(0.2)
    sid = ex.session.id
    ex.shutdown(wait=False)
    e = f.exception(10)
    assert isinstance(e, FalconetError) and e.code == "CLIENT_CLOSED", e
    ex2 = falconet.Executor(url)
    assert ex2.cancel(["abandoned"], session=sid) == 1
    ex2.shutdown()


def _no_ext(code: int, data: bytes) -> object:
    raise ValueError(f"extension type {code} in a frame to a peer that did not announce records")


class RawPeer:
    """A client written from docs/protocol.md alone: websockets + msgpack, no falconet code."""

    def __init__(self, ws, capture: list | None = None) -> None:  # type: ignore[no-untyped-def]
        self.ws = ws
        self.frames = 0
        self.capture = capture
        self.pending: list[dict] = []

    async def send(self, *messages: dict) -> None:
        frame = msgpack.packb(list(messages), use_bin_type=True)
        if self.capture is not None:
            self.capture.append({"dir": "client → dispatcher", "hex": frame.hex(), "decoded": list(messages)})
        await self.ws.send(frame)

    async def next(self, t: str) -> dict:
        for m in self.pending:
            if m["t"] == t:
                self.pending.remove(m)
                return m
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), 15)
            assert isinstance(frame, bytes), "binary frames only"
            messages = msgpack.unpackb(frame, raw=False, ext_hook=_no_ext, strict_map_key=False)
            self.frames += 1
            assert isinstance(messages, list), messages
            wanted = [m for m in messages if m["t"] != "hb"]
            if self.capture is not None and wanted:
                self.capture.append({"dir": "dispatcher → client", "hex": frame.hex(), "decoded": messages})
            found = None
            for m in messages:
                if m["t"] == "hb":
                    continue
                if found is None and m["t"] == t:
                    found = m
                else:
                    self.pending.append(m)
            if found is not None:
                return found


async def wire(url: str, capture_path: str | None = None) -> None:
    capture: list | None = [] if capture_path else None
    async with websockets.connect(url, compression=None) as ws:
        a = RawPeer(ws, capture)
        await a.send({"t": "hello", "v": 1, "role": "client", "caps": ["batch"]})
        welcome = await a.next("welcome")
        assert welcome["resumed"] is False and "records" not in welcome.get("caps", []), welcome
        await a.send({"t": "submit", "ref": 1, "tasks": [{"id": "hello-1", "cmd": ["echo", "hi"]}]})
        accepted = await a.next("accepted")
        assert accepted["ref"] == 1 and accepted["accepted"] == 1 and accepted["rejected"] == [], accepted
        result = await a.next("result")
        assert result["result"]["id"] == "hello-1" and result["result"]["stdout"] == "hi\n", result
        await a.send({"t": "ack", "cursor": result["seq"]})
        if capture is not None:
            a.capture = None
        # Query answers, big integers (64-bit), heartbeats: all plain msgpack.
        await a.send({"t": "query", "ref": 2, "ids": ["hello-1", "nope"]}, {"t": "sessions", "ref": 3}, {"t": "hb", "at": 2**53 - 1})
        tasks = await a.next("tasks")
        assert tasks["missing"] == ["nope"] and tasks["tasks"][0]["state"] == "succeeded", tasks
        await a.next("sessions")
        # A peer that sends an extension type gets BAD_FRAME, and the dispatcher serves the others.
        async with websockets.connect(url, compression=None) as ws2:
            b = RawPeer(ws2)
            await b.send({"t": "hello", "v": 1, "role": "client", "caps": ["batch"]})
            await b.next("welcome")
            await ws2.send(bytes.fromhex("91") + bytes.fromhex("d40501"))  # [ext type 5]
            err = await b.next("error")
            assert err["code"] in ("BAD_FRAME", "INVALID_MESSAGE"), err
        await a.send({"t": "submit", "ref": 4, "tasks": [{"id": "after-bad-peer", "builtin": "noop"}]})
        assert (await a.next("result"))["result"]["id"] == "after-bad-peer"
        report(frames=a.frames)
    if capture_path:
        with open(capture_path, "w") as f:
            json.dump(capture, f, indent=1)


async def records(url: str) -> None:
    """A peer that did not announce `records` sends a msgpackr record (ext 0x72): it must get an
    error code back, and the dispatcher must keep serving others."""
    # msgpackr's encoding of [{t: 'sessions', ref: 7}] with records: d4 72 40 = define record 0x40.
    record_frame = bytes.fromhex("91d4724092a174a3726566a873657373696f6e7307")
    async with websockets.connect(url, compression=None) as ws, websockets.connect(url, compression=None) as ws2:
        a, b = RawPeer(ws), RawPeer(ws2)
        for p in (a, b):
            await p.send({"t": "hello", "v": 1, "role": "client", "caps": ["batch"]})
            await p.next("welcome")
        await ws2.send(record_frame)
        answer = None
        while answer is None:
            frame = await asyncio.wait_for(ws2.recv(), 10)
            for m in msgpack.unpackb(frame, raw=False, ext_hook=_no_ext, strict_map_key=False):
                if m["t"] in ("error", "sessions"):
                    answer = m
        await a.send({"t": "submit", "ref": 1, "tasks": [{"id": "still-served", "builtin": "noop"}]})
        assert (await a.next("result"))["result"]["id"] == "still-served"
        report(answer=answer["t"], code=answer.get("code"))
        assert answer["t"] == "error" and answer["code"] in ("BAD_FRAME", "INVALID_MESSAGE"), (
            f"the dispatcher decoded a records frame from a peer that did not announce records and answered {answer}"
        )


async def bench(url: str, n: str = "20000") -> None:
    count = int(n)
    c = await falconet.connect(url)
    got = 0

    async def read() -> None:
        nonlocal got
        async for _ in c.results():
            got += 1
            if got == count:
                break

    t0 = time.perf_counter()
    reader = asyncio.ensure_future(read())
    await c.submit_many(({"builtin": "noop"} for _ in range(count)), max_in_flight=10_000)
    await reader
    elapsed = time.perf_counter() - t0
    assert got == count
    report(tasks=count, seconds=round(elapsed, 3), rate=round(count / elapsed))
    await c.close()


async def failover(url: str, peer: str) -> None:
    """``url``: a dispatcher with an executor; ``peer``: a peer that answers MOVED to ``url``."""
    dead = f"ws://127.0.0.1:{closed_port()}"
    c = await falconet.connect(f"{dead},{url}", connect_timeout=20)  # the dead one first
    assert c.dispatcher == url, c.dispatcher
    r = await c.submit({"cmd": ["echo", "past the dead one"]})
    assert r.ok and r.stdout == "past the dead one\n", r
    await c.close()

    moved = await falconet.connect([peer], connect_timeout=20)
    assert moved.dispatcher == url, moved.dispatcher
    assert url in moved.urls, moved.urls  # the redirect target joined the list
    r = await moved.submit({"cmd": ["echo", "redirected"]})
    assert r.ok and r.stdout == "redirected\n", r
    await moved.close()

    e = await expect_error("USAGE", falconet.connect(f"{url},,{dead}", connect_timeout=1))
    assert "entry 2 of 3" in e.message, e.message


SCENARIOS = {"failover": failover, "basic": basic, "many": many, "resume": resume, "executor": executor_adapter, "wire": wire, "records": records, "bench": bench}
DEADLINES = {"failover": 60, "basic": 60, "many": 60, "resume": 90, "executor": 60, "wire": 30, "records": 30, "bench": 120}


def main() -> None:
    name, url, *rest = sys.argv[1:]
    deadline = DEADLINES[name]
    signal.signal(signal.SIGALRM, lambda *_: (print(f"scenario {name}: deadline of {deadline} s passed", file=sys.stderr, flush=True), os._exit(3)))
    signal.alarm(deadline)
    fn = SCENARIOS[name]
    if asyncio.iscoroutinefunction(fn):
        asyncio.run(fn(url, *rest))
    else:
        fn(url, *rest)
    print(f"scenario {name}: ok", flush=True)


if __name__ == "__main__":
    main()
