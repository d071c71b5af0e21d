"""How one caller of the generator reaches its site: a PlaceCall stream of its own, or its call
reference on the site's trunk link (TrunkIngressService.Signalling, one stream for many calls).

Both count the gRPC messages of the call honestly in its CallerView: a stream's message is the
call's own; a link's message carrying k calls' signals or reports is a k-th of a message to each,
so that the views of a run sum to the messages the links carried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

import grpc

from vcc.v1 import trunk_pb2, trunk_pb2_grpc

if TYPE_CHECKING:
    from tools.simulation.traffic import CallerView

log = logging.getLogger(__name__)

# Signals in one message of the link (the site takes up to 1,000).
MAX_SIGNALS = 500
# How long closing a link waits for the site to finish it after the gateway half-closed.
CLOSE_S = 5.0


class PathBroken(Exception):
    """The call's path ended before its `ended`: how, as "CODE: details"."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


class CallPath(Protocol):
    async def write(self, request: trunk_pb2.PlaceCallRequest) -> None: ...

    async def read(self) -> trunk_pb2.PlaceCallResponse | None:
        """The call's next progress; None: the path ended (no `ended`); raises PathBroken."""
        ...

    async def done_writing(self) -> None: ...


class StreamPath:
    """A PlaceCall stream of the call's own (the trunk channel is the stream)."""

    def __init__(
        self, stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub, view: CallerView, deadline_s: float
    ) -> None:
        self._call = stub.PlaceCall(timeout=deadline_s)
        self._view = view
        self._lock = asyncio.Lock()

    async def write(self, request: trunk_pb2.PlaceCallRequest) -> None:
        try:
            async with self._lock:  # grpc.aio allows one write in flight per stream
                await self._call.write(request)
        except grpc.aio.AioRpcError as exc:
            raise PathBroken(rpc_error(exc)) from exc
        self._view.messages_out += 1

    async def read(self) -> trunk_pb2.PlaceCallResponse | None:
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise PathBroken(rpc_error(exc)) from exc
        if response is grpc.aio.EOF:
            return None
        assert isinstance(response, trunk_pb2.PlaceCallResponse)
        self._view.messages_in += 1
        return response

    async def done_writing(self) -> None:
        """Half-close after `ended`: nothing more to say; the site closes the stream."""
        async with self._lock:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self._call.done_writing()


class LinkPath:
    """A call's reference on a trunk link: its signals go out on the link, its reports come here."""

    def __init__(self, link: TrunkLink, ref: str, view: CallerView) -> None:
        self._link = link
        self.ref = ref
        self.view = view
        self.inbox: asyncio.Queue[trunk_pb2.PlaceCallResponse | PathBroken | None] = asyncio.Queue()

    async def write(self, request: trunk_pb2.PlaceCallRequest) -> None:
        self._link.send(self, request)

    async def read(self) -> trunk_pb2.PlaceCallResponse | None:
        item = await self.inbox.get()
        if isinstance(item, PathBroken):
            raise item
        return item

    async def done_writing(self) -> None:
        """After `ended`: the call is over on the link (which goes on for the others)."""
        self._link.forget(self.ref)
        self.inbox.put_nowait(None)


class TrunkLink:
    """The gateway's end of one Signalling stream to a site: its live calls by reference, their
    signals written in batches (all that is pending in one message), the reports read back and
    handed to each call. The link breaking breaks every call on it."""

    def __init__(self, stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub, deadline_s: float) -> None:
        self._call = stub.Signalling(timeout=deadline_s)
        self._paths: dict[str, LinkPath] = {}
        self._pending: list[tuple[trunk_pb2.CallSignal, CallerView]] = []
        self._wake = asyncio.Event()
        self.broken: str | None = None
        self._closing = False
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    def path(self, view: CallerView) -> LinkPath:
        path = LinkPath(self, view.key, view)
        self._paths[view.key] = path
        return path

    def send(self, path: LinkPath, request: trunk_pb2.PlaceCallRequest) -> None:
        if self.broken is not None:
            raise PathBroken(self.broken)
        signal = trunk_pb2.CallSignal(call_ref=path.ref)
        action = request.WhichOneof("action")
        if action == "offer":
            signal.offer.CopyFrom(request.offer)
        elif action == "digits":
            signal.digits.CopyFrom(request.digits)
        else:
            signal.hang_up.SetInParent()
        self._pending.append((signal, path.view))
        self._wake.set()

    def forget(self, ref: str) -> None:
        self._paths.pop(ref, None)

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    batch, self._pending = self._pending[:MAX_SIGNALS], self._pending[MAX_SIGNALS:]
                    share = 1.0 / len(batch)
                    for _, view in batch:
                        view.messages_out += share
                    await self._call.write(trunk_pb2.SignallingRequest(signals=[s for s, _ in batch]))
                if self._closing:
                    await self._call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            # The stream ended meanwhile: the reader says how.
            log.debug("trunk link: writing stopped: %s", exc)

    async def _read(self) -> None:
        error = "LINK_CLOSED: the link ended before the call's end"
        try:
            async for message in self._call:
                self._take(message)
        except grpc.aio.AioRpcError as exc:
            error = rpc_error(exc)
        finally:
            self._break(error)

    def _break(self, error: str) -> None:
        if self.broken is None:
            self.broken = error
        self._writer.cancel()
        for path in self._paths.values():
            path.inbox.put_nowait(PathBroken(self.broken))
        self._paths.clear()

    def _take(self, message: trunk_pb2.SignallingResponse) -> None:
        reports = message.reports
        share = 1.0 / len(reports) if reports else 0.0
        for report in reports:
            path = self._paths.get(report.call_ref)
            if path is None:
                if report.WhichOneof("report") == "error":
                    log.warning("trunk link: %s: %s", report.error.code, report.error.message)
                continue
            path.view.messages_in += share
            if report.WhichOneof("report") == "error":
                # The site refused this call's signal: the call is over for the caller.
                del self._paths[report.call_ref]
                path.inbox.put_nowait(PathBroken(f"{report.error.code}: {report.error.message}"))
            else:
                path.inbox.put_nowait(report.progress)

    async def close(self) -> None:
        """Half-close and let the site finish the link (it ends it once no call is left on it);
        calls still on it are dropped (the site hangs them up)."""
        if self.broken is None and not self._paths:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), CLOSE_S)
        self._call.cancel()
        self._writer.cancel()
        self._reader.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)
        # Every call still on the link is broken (also when the reader, cancelled before it ran,
        # could not say so).
        self._break("CANCELLED: the gateway closed the link")


class Trunk:
    """The gateway's trunk to one site: a path for each call, on the site's link (opened when the
    first call needs it, again after it broke) or a PlaceCall stream per call."""

    def __init__(
        self, stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub, *, linked: bool, deadline_at: float
    ) -> None:
        self.stub = stub
        self.linked = linked
        self._deadline_at = deadline_at  # the loop's clock
        self._link: TrunkLink | None = None
        self._old: list[TrunkLink] = []

    def _deadline_s(self) -> float:
        return max(1.0, self._deadline_at - asyncio.get_running_loop().time())

    def path(self, view: CallerView) -> CallPath:
        if not self.linked:
            return StreamPath(self.stub, view, self._deadline_s())
        if self._link is None or self._link.broken is not None:
            if self._link is not None:
                self._old.append(self._link)
            self._link = TrunkLink(self.stub, self._deadline_s())
        return self._link.path(view)

    async def close(self) -> None:
        links = [*self._old, *([self._link] if self._link is not None else [])]
        await asyncio.gather(*(link.close() for link in links))
