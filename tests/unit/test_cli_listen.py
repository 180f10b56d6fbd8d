"""The server's own listening socket: connections it accepts send without delay.

asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are
TCP; a listening socket made with protocol 0 gave connections that held the second
part of every response for the client's delayed ACK: 44 ms a request.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from velostream.cli.serve import listen as _listen


def test_accepted_connections_have_nagle_off() -> None:
    async def accept_one() -> int:
        sock = _listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(accepted, 5)
            writer.close()
        return nodelay

    assert asyncio.run(accept_one()) != 0


def test_a_port_in_use_is_an_os_error_and_leaks_no_socket() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            _listen("127.0.0.1", taken.getsockname()[1])
