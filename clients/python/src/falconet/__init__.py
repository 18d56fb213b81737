"""falconet: the Python client of the falconet task dispatcher.

>>> import asyncio, falconet
>>> async def main():
...     client = await falconet.connect("ws://127.0.0.1:7878")
...     result = await client.submit({"cmd": ["echo", "hi"]})
...     print(result.status, result.stdout)
...     await client.close()

Standard msgpack over a WebSocket (no msgpackr extension types); dependencies: ``msgpack`` and
``websockets`` only. See README.md and docs/protocol.md.
"""
from .client import Client, SessionRef, SubmitSummary, TaskHandle, connect
from .errors import FalconetError
from .executor import Executor
from .models import Result, SessionInfo, Task, TaskInfo, Timings

__all__ = [
    "connect",
    "Client",
    "TaskHandle",
    "SessionRef",
    "SubmitSummary",
    "FalconetError",
    "Executor",
    "Task",
    "Result",
    "Timings",
    "TaskInfo",
    "SessionInfo",
]
__version__ = "0.1.0"
