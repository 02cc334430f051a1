"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs: a cap on
the request line and headers, a deadline for a request that starts and stalls, and one for a
client that stops reading its reply.

uvicorn bounds none of them: httptools accumulates any header size, a connection that sends half
a request, or nothing, is kept open for ever, and so is one whose reply the client never reads
(with the reply held in memory, which even closing the transport keeps until it is sent).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Request line plus headers; tritonclient sends a few hundred bytes.
MAX_HEADER_BYTES = 64 << 10


class HeaderTooLarge(Exception):
    """Raised inside the parser callback; httptools turns it into a parser error, which uvicorn
    answers with 400 and a closed connection."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._write_timer: Any = None

    def pause_writing(self) -> None:
        # The transport's buffer is full: the client is not reading. As a stalled request body
        # (app.py), it has twice the idle timeout of silence to read some, or the connection
        # is dropped, reply and all.
        super().pause_writing()
        self._cancel_write_timer()
        self._write_timer = self.loop.call_later(2 * self.timeout_keep_alive, self.transport.abort)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_write_timer()
        super().connection_lost(exc)

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()  # a connection that never sends a request is closed too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None or self.cycle.response_complete:
            # Between requests, or inside an incomplete request line or header block: the
            # client has `timeout_keep_alive` seconds to finish it.
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"request headers over {MAX_HEADER_BYTES} bytes")
