"""Postfix's smtp-sink on a free loopback port, installed or unpacked on first use.

Every mail transaction is dumped to one file (`-d`), so deliveries can be counted per
Message-ID afterwards (the exactly-once check), and each file's modification time is when its
message arrived (smtp-sink has no timestamps of its own; the kernel's file clock is coarse, a
few milliseconds, which is enough for "time to the first email"). The dump directory lives on
the same disk as the benchmark database; writing it is part of the sink's cost, identical for
every contender.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_BINARY = Path("/usr/sbin/smtp-sink")
MESSAGE_ID_RE = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ensure_smtp_sink(cache_dir: Path) -> Path:
    """The smtp-sink binary: the system's, else one unpacked from the postfix .deb into
    cache_dir (apt-get download + dpkg -x, no root needed for that), else apt-get install."""
    found = shutil.which("smtp-sink") or (str(SYSTEM_BINARY) if SYSTEM_BINARY.exists() else None)
    if found:
        return Path(found)
    unpacked = cache_dir / "postfix" / "usr" / "sbin" / "smtp-sink"
    if unpacked.exists():
        return unpacked
    print("smtp-sink not found: fetching the postfix package ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "postfix"], cwd=tmp, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(["apt-get", "download", "postfix"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("postfix_*.deb"))
        (cache_dir / "postfix").mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(cache_dir / "postfix")], check=True)
    if unpacked.exists():
        return unpacked
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env)
    return SYSTEM_BINARY


class SinkProcess:
    """An SMTP sink running as a child process of the harness, on a free loopback port."""

    name = "sink"

    def __init__(self, work_dir: Path, host: str = "127.0.0.1"):
        self.work_dir = Path(work_dir)
        self.host = host
        self.port = free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _wait_listening(self, exit_output) -> None:
        """Until the port accepts connections; `exit_output()` says why, should it exit first."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {exit_output()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def arrivals(self) -> list[tuple[float, str]]:
        raise NotImplementedError


class SmtpSink(SinkProcess):
    name = "smtp-sink"

    def __init__(self, work_dir: Path, host: str = "127.0.0.1"):
        super().__init__(work_dir, host)
        self.dump_dir = self.work_dir / "dump"

    def start(self) -> SmtpSink:
        binary = ensure_smtp_sink(self.work_dir)
        shutil.rmtree(self.dump_dir, ignore_errors=True)
        self.dump_dir.mkdir(parents=True)
        command = [str(binary), "-d", f"{self.dump_dir}/%H%M%S."]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u
            self.dump_dir.chmod(0o777)
            command += ["-u", "nobody"]
        command += [f"{self.host}:{self.port}", "1024"]
        env = dict(os.environ)
        libraries = binary.parent.parent / "lib" / "postfix"  # an unpacked .deb's shared libraries
        if libraries.is_dir():
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libraries), env.get("LD_LIBRARY_PATH")]))
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self._wait_listening(lambda: self.process.stderr.read().decode())
        return self

    def arrivals(self) -> list[tuple[float, str]]:
        """(arrival time, Message-ID) per message since the last clear()."""
        rows = []
        for entry in os.scandir(self.dump_dir):
            with open(entry.path, "rb") as fh:
                match = MESSAGE_ID_RE.search(fh.read(8192))
            rows.append((entry.stat().st_mtime, match.group(1).decode() if match else "-"))
        return rows

    def delivered(self) -> int:
        return sum(1 for _ in os.scandir(self.dump_dir))

    def clear(self) -> None:
        for entry in os.scandir(self.dump_dir):
            os.unlink(entry.path)
