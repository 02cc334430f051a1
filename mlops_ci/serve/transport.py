"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs: a cap on
the request line and headers, a deadline for a request that starts and stalls, and one for a
client that stops reading its reply.

uvicorn bounds none of them: httptools accumulates any header size, a connection that sends half
a request, or nothing, is kept open for ever, and so is one whose reply the client never reads
(with the reply held in memory, which even closing the transport keeps until it is sent).
Beside the limits: the protocol's `{"error": ...}` for a request httptools cannot parse, and an
`Upgrade` (h2c) ignored rather than the request's body lost.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: Request line plus headers; tritonclient sends a few hundred bytes.
MAX_HEADER_BYTES = 64 << 10


class HeaderTooLarge(Exception):
    """Raised inside the parser callback; httptools turns it into a parser error, which uvicorn
    answers with 400 and a closed connection."""


class _Parser(httptools.HttpRequestParser):
    """httptools' parser, except that it hands an Upgrade it stopped at to the protocol."""

    def __init__(self, protocol: BoundedHttpToolsProtocol) -> None:
        super().__init__(protocol)
        self._protocol = protocol
        with contextlib.suppress(AttributeError):  # as uvicorn's (httptools < 0.6.3 has none)
            self.set_dangerous_leniencies(lenient_data_after_close=True)

    def feed_data(self, data: Any) -> None:  # uvicorn's data_received gives bytes
        try:
            super().feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._protocol.ignored_upgrade is None:
                raise  # a WebSocket upgrade uvicorn takes (or warns about)
            self._protocol.parse_without_upgrade(bytes(data[exc.args[0] :]))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._write_timer: Any = None
        # llhttp stops at the end of the headers of a request with `Connection: Upgrade` and
        # `Upgrade` (h2c: `curl --http2`), everything after them being the other protocol's:
        # such a request reached the app without its body ("not valid JSON"), and the body was
        # then parsed as the next request. The upgrade is ignored instead (RFC 9110 §7.8): the
        # request's head, without its Upgrade header, is parsed again with what follows it.
        self.ignored_upgrade: bytes | None = None
        self.parser = _Parser(self)

    def on_headers_complete(self) -> None:
        # An Upgrade header (CONNECT is an upgrade to llhttp too, and stays uvicorn's to answer;
        # the head parsed again has no Upgrade header, so it never comes back here).
        if self._upgrade_to_ignore():
            version = self.parser.get_http_version().encode()
            method = self.parser.get_method()
            lines = [b"%s %s HTTP/%s\r\n" % (method, self.url, version)]
            lines += [b"%s: %s\r\n" % (n, v) for n, v in self.headers if n != b"upgrade"]
            self.ignored_upgrade = b"".join([*lines, b"\r\n"])
            return  # not handed to the app: parse_without_upgrade does, once the parser stops
        super().on_headers_complete()

    def _upgrade_to_ignore(self) -> bool:
        """Whether llhttp stops at this request's head for an upgrade (an `Upgrade` header and
        `upgrade` among the `Connection` tokens) that uvicorn does not take: it takes a
        WebSocket one when a WebSocket library is installed. Read here, not with uvicorn's
        private helpers, which this runs for every request."""
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:  # uvicorn lowercases the names
            if name == b"connection":
                connection += [token.strip().lower() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.strip().lower()
        if upgrade is None or b"upgrade" not in connection:
            return False
        websocket = getattr(self, "ws_protocol_class", None) is not None
        return not (upgrade == b"websocket" and websocket)

    def on_message_complete(self) -> None:
        if self.ignored_upgrade is None:  # else: llhttp's end of a message it did not read
            super().on_message_complete()

    def parse_without_upgrade(self, rest: bytes) -> None:
        head, self.ignored_upgrade = self.ignored_upgrade or b"", None
        self.parser = _Parser(self)
        self.parser.feed_data(head + rest)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is text/plain: every error of `serve` is the protocol's {"error": ...}, which
        # clients parse (tritonclient reported "an exception occurred in the client while
        # decoding the response", not the server's message).
        if self._header_bytes > MAX_HEADER_BYTES:
            msg = f"the request line and headers are over {MAX_HEADER_BYTES} bytes"
        body = json.dumps({"error": msg}).encode()
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [b"content-type: application/json\r\n"]
        content += [b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body]
        self.transport.write(b"".join(content))
        self.transport.close()

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
