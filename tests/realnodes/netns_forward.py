"""Keep a private network namespace alive and forward host-loopback ports into it.

Run by tests/realnodes/harness.py as ``unshare --net python3 netns_forward.py CONTROL_FD``:

- the process starts in a fresh network namespace that has only ``lo`` (brought up here), so
  nodes started inside it (``nsenter --net=/proc/<this pid>/ns/net``) reach nothing but each
  other: go-waku's unconditional NTP lookups of pool.ntp.org and any dial it might attempt fail
  inside the namespace instead of leaving the machine;
- CONTROL_FD is one end of a Unix socketpair. The parent sends ``PORT`` together with a listening
  TCP socket (SCM_RIGHTS) that it bound on the *host's* 127.0.0.1; a socket keeps the namespace
  it was created in, so accepting on it serves host clients, while the connection to
  127.0.0.1:PORT is made inside the private namespace. Each request is answered ``ok``;
- it prints ``ready`` once lo is up, and exits when the control socket closes (the test process
  closed it or is gone).

Standard library only; no third-party import, so it runs with any python3.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def handler(port: int):  # type: ignore[no-untyped-def]
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            node_r, node_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            # Nothing listens (the node is down or restarting): reset, as a refused connect would.
            sock = client_w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, node_w), pipe(node_r, client_w))

    return handle


async def main(control_fd: int) -> None:
    loopback_up()
    control = socket.socket(fileno=control_fd)
    loop = asyncio.get_running_loop()
    servers = []
    print("ready", flush=True)
    while True:
        # Blocking receive in a thread: asyncio has no recv_fds.
        data, fds, _flags, _addr = await loop.run_in_executor(None, socket.recv_fds, control, 64, 1)
        if not data:
            break  # the parent closed the control socket or died
        port = int(data.decode())
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        servers.append(await asyncio.start_server(handler(port), sock=sock))
        control.sendall(b"ok")
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
