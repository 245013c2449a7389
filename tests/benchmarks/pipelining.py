"""What SMTP PIPELINING saves on one connection: N emails to Postfix's smtp-sink (which offers
PIPELINING) through a proxy that holds every chunk for half the round trip in each direction,
as a relay that far away would, sent by our backend's connection with and without pipelining.

    python -m tests.benchmarks.pipelining --messages 2000 --rtt-ms 20

Both runs use the same prebuilt emails (about 3 KB, an HTML alternative) and one connection
each; the figure is emails per second, every one counted at the sink. Without pipelining each
email costs four round trips (MAIL, RCPT, DATA, the body); with it, two (the envelope group,
the body). The proxy runs in a process of its own, so its work is not in the sender's time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from messaging.engine.channels.smtp_backend import TrackedSMTP  # noqa: E402
from tests.benchmarks.sink import SmtpSink, free_port  # noqa: E402

SENDER = "bench@uni.example"
# smtp-sink is fetched once into it (tests/benchmarks/sink.py), the dump directory emptied per run.
WORK_DIR = Path(os.environ.get("VAR_DIR", ROOT / "var")) / "bench" / "pipelining"


async def _forward(reader, writer, delay: float) -> None:
    """Copy reader to writer, each chunk written `delay` seconds after it was read, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def write_when_due() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    writing = asyncio.create_task(write_when_due())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    finally:
        queue.put_nowait((loop.time() + delay, b""))
        await writing


async def _proxy(listen_port: int, upstream_port: int, delay: float) -> None:
    async def connection(client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        for sock in (client_writer, server_writer):
            sock.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            _forward(client_reader, server_writer, delay),
            _forward(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def start_proxy(upstream_port: int, rtt_ms: float) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.pipelining", "--proxy", str(port), str(upstream_port)]
    process = subprocess.Popen([*command, str(rtt_ms / 2000)], cwd=ROOT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the latency proxy did not start")


def emails(n: int) -> list[tuple[str, bytes]]:
    mails = []
    for i in range(n):
        mail = MIMEMultipart("alternative")
        mail["From"], mail["To"], mail["Subject"] = SENDER, f"student{i}@uni.example", f"Exam results {i}"
        mail["Message-ID"] = f"<pipelining-{i}@bench.local>"
        text = f"Hello student {i},\n\nYour results are ready.\n" + "Lorem ipsum dolor sit amet. " * 40
        mail.attach(MIMEText(text, "plain"))
        mail.attach(MIMEText(f"<html><body><p>{text}</p></body></html>", "html"))
        mails.append((mail["To"], mail.as_bytes().replace(b"\n", b"\r\n")))
    return mails


def run(port: int, mails: list[tuple[str, bytes]], pipelining: bool) -> tuple[float, bool]:
    """Seconds to send every email over one connection (connecting and EHLO excluded)."""
    client = TrackedSMTP("127.0.0.1", port, local_hostname="bench.local", timeout=30, pipelining=pipelining)
    try:
        client.ehlo()
        offered = client.has_extn("pipelining")
        started = time.perf_counter()
        for to, data in mails:
            client.sendmail(SENDER, [to], data)
        return time.perf_counter() - started, offered
    finally:
        client.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[20.0])
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)  # listen port, upstream port, delay
    args = parser.parse_args()
    if args.proxy:
        asyncio.run(_proxy(int(args.proxy[0]), int(args.proxy[1]), float(args.proxy[2])))
        return
    mails = emails(args.messages)
    sink = SmtpSink(WORK_DIR).start()
    try:
        for rtt_ms in args.rtt_ms:
            proxy, port = start_proxy(sink.port, rtt_ms) if rtt_ms else (None, sink.port)
            try:
                for pipelining in (False, True):
                    report(rtt_ms, pipelining, *run(port, mails, pipelining), len(mails), sink)
            finally:
                if proxy:
                    proxy.terminate()
                    proxy.wait(timeout=10)
    finally:
        sink.stop()


def report(rtt_ms: float, pipelining: bool, seconds: float, offered: bool, n: int, sink) -> None:
    delivered = sink.delivered()
    sink.clear()
    if delivered != n:
        raise RuntimeError(f"{delivered} of {n} emails reached the sink")
    print(
        f"rtt={rtt_ms:g} ms pipelining={'on ' if pipelining else 'off'} (offered: {offered}) "
        f"emails={n} seconds={seconds:.2f} emails/s={n / seconds:.1f} ms/email={seconds * 1000 / n:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
