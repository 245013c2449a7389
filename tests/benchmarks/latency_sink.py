"""An SMTP sink that answers the end of DATA after a delay, as a distant relay does.

    python -m tests.benchmarks.latency_sink --port 2525 --latency-ms 100 --record arrivals.tsv

aiosmtpd on one asyncio loop, in a process of its own (its CPU is not in the contenders'
times). Each message's arrival (time.time() when DATA completed, before the delay) and its
Message-ID are appended to --record, one line each, line-buffered: the file is complete at
any moment, so the harness reads it between runs and truncates it to start the next one. The
delay is an asyncio.sleep, so every connection waits its own 100 ms in parallel, and N
connections give at most N x 1000 / latency_ms messages per second.

LatencySink starts and reads it from the harness, with the same interface as sink.SmtpSink.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks.sink import MESSAGE_ID_RE, SinkProcess

HEADER_BYTES = 8192  # the Message-ID is among the headers, well within this


class Recorder:
    """aiosmtpd handler: record, wait, accept."""

    def __init__(self, record, latency_s: float):
        self.record = record
        self.latency_s = latency_s

    async def handle_DATA(self, server, session, envelope) -> str:
        arrived = time.time()
        match = MESSAGE_ID_RE.search(envelope.content, 0, HEADER_BYTES)
        message_id = match.group(1).decode() if match else "-"
        self.record.write(f"{arrived:.6f}\t{message_id}\n")
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return "250 2.0.0 OK"


async def serve(host: str, port: int, latency_ms: float, record_path: Path) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with open(record_path, "a", buffering=1) as record:  # line-buffered: nothing waits in memory
        handler = Recorder(record, latency_ms / 1000)
        # A fixed hostname: aiosmtpd would otherwise call getfqdn() for every connection.
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="latency-sink", loop=loop), host, port, backlog=1024
        )
        async with server:
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # no per-command log records
    asyncio.run(serve(args.host, args.port, args.latency_ms, args.record))


class LatencySink(SinkProcess):
    """The sink above as a child process of the harness."""

    name = "latency sink"

    def __init__(self, work_dir: Path, latency_ms: float, host: str = "127.0.0.1"):
        super().__init__(work_dir, host)
        self.record_path = self.work_dir / "arrivals.tsv"
        self.latency_ms = latency_ms

    def start(self) -> LatencySink:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.record_path.write_bytes(b"")
        command = [sys.executable, "-m", "tests.benchmarks.latency_sink", "--host", self.host]
        command += ["--port", str(self.port), "--latency-ms", str(self.latency_ms)]
        command += ["--record", str(self.record_path)]
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        # Its messages go to a file: a pipe nobody reads would block the sink once full.
        with open(self.work_dir / "sink.log", "wb") as log:
            self.process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening(lambda: (self.work_dir / "sink.log").read_text())
        return self

    def arrivals(self) -> list[tuple[float, str]]:
        """(time.time() at the end of DATA, Message-ID) per message since the last clear()."""
        rows = []
        with open(self.record_path) as fh:
            for line in fh:
                stamp, message_id = line.rstrip("\n").split("\t")
                rows.append((float(stamp), message_id))
        return rows

    def delivered(self) -> int:
        return len(self.arrivals())

    def clear(self) -> None:
        # The sink appends (O_APPEND): after truncation its next line starts the file again.
        os.truncate(self.record_path, 0)


if __name__ == "__main__":
    main()
