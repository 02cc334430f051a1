"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs: a cap on
the request line and headers, and a deadline for a request that starts and stalls.

uvicorn bounds neither: httptools accumulates any header size, and a connection that sends half
a request, or nothing, is kept open for ever.
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
