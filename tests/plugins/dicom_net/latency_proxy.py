"""A small asyncio TCP proxy on loopback that delays each direction by a fixed time.

Every chunk read on one side is written to the other side ``delay_ms`` milliseconds after
it was read (chunks keep their order; the bandwidth is not limited, only the latency is
added), so with the default 10 ms a request/answer round trip costs 20 ms more, like a
link of 20 ms RTT. ``TCP_NODELAY`` is set on both sockets so that the proxy adds no
Nagle delay of its own.

From a test::

    from latency_proxy import LatencyProxy
    with LatencyProxy("127.0.0.1", 8042, delay_ms=10) as proxy:
        requests.get(f"http://127.0.0.1:{proxy.port}/system")

From a shell::

    python tests/plugins/dicom_net/latency_proxy.py --target 127.0.0.1:8042 --listen 8050 --delay-ms 10
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from typing import Optional


class LatencyProxy:
    """TCP proxy ``127.0.0.1:port`` → ``target_host:target_port`` with added latency.

    Parameters
    ----------
    target_host : str
        Host to connect to (loopback in tests).
    target_port : int
        Port to connect to.
    delay_ms : float
        Delay added to each direction, in milliseconds (default 10: +20 ms per round trip).
    listen_port : int
        Port to listen on, on 127.0.0.1; 0 (default) picks a free one (see :attr:`port`).

    Attributes
    ----------
    port : int
        The listening port, once :meth:`start` returned.
    bytes_forwarded : dict
        ``{"up": n, "down": n}``: bytes sent toward the target and back.
    connections : int
        Connections accepted so far.
    """

    def __init__(self, target_host: str, target_port: int, delay_ms: float = 10.0, listen_port: int = 0) -> None:
        self.target_host, self.target_port = target_host, int(target_port)
        self.delay = float(delay_ms) / 1000.0
        self.listen_port = int(listen_port)
        self.port = 0
        self.bytes_forwarded = {"up": 0, "down": 0}
        self.connections = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._tasks: set = set()
        self._writers: set = set()

    # ---- asyncio side ---------------------------------------------------------------------
    @staticmethod
    def _nodelay(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def read_side() -> None:
            try:
                while True:
                    data = await reader.read(256 * 1024)
                    queue.put_nowait((time.monotonic() + self.delay, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                queue.put_nowait((time.monotonic() + self.delay, b""))

        async def write_side() -> None:
            try:
                while True:
                    due, data = await queue.get()
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(data)
                    self.bytes_forwarded[key] += len(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                return

        await asyncio.gather(read_side(), write_side())

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_writer)
        self._nodelay(client_writer)
        try:
            target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers.add(target_writer)
        self._nodelay(target_writer)
        try:
            await asyncio.gather(self._pump(client_reader, target_writer, "up"),
                                 self._pump(target_reader, client_writer, "down"))
        finally:
            for w in (client_writer, target_writer):
                self._writers.discard(w)
                try:
                    w.close()
                except Exception:  # noqa: BLE001
                    pass

    def _track(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _main(self) -> None:
        self._server = await asyncio.start_server(lambda r, w: self._track(self._handle(r, w)),
                                                  "127.0.0.1", self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        async with self._server:
            await self._server.serve_forever()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except asyncio.CancelledError:
            pass
        finally:
            for t in list(self._tasks):
                t.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    # ---- thread side ----------------------------------------------------------------------
    def start(self) -> "LatencyProxy":
        """Start the proxy in a daemon thread; returns once it listens."""
        self._thread = threading.Thread(target=self._run, name=f"latency-proxy-{self.target_port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def stop(self) -> None:
        """Stop listening, drop the open connections and join the thread."""
        loop = self._loop
        if loop is not None and self._server is not None and not loop.is_closed():
            def shutdown() -> None:
                self._server.close()
                for w in list(self._writers):
                    w.transport.abort()
                for t in list(self._tasks):
                    t.cancel()
                for t in asyncio.all_tasks(loop):
                    t.cancel()
            loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "LatencyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[list] = None) -> None:
    """Command line: ``--target HOST:PORT --listen PORT --delay-ms MS`` (runs until Ctrl-C)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="delay per direction, ms (default 10)")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = LatencyProxy(host or "127.0.0.1", int(port), args.delay_ms, args.listen).start()
    print(f"127.0.0.1:{proxy.port} -> {args.target}, +{args.delay_ms} ms each way", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
