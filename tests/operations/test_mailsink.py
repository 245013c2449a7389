"""The development mail sink (`manage.py mailsink`) keeps every mail it stored, across restarts."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from messaging.operations.mailsink import MailSink, free_port
from tests.conftest import ROOT, wait_until


def send(port: int, to: list[str], subject: str, body: str = "Hello") -> None:
    message = EmailMessage()
    message["From"] = "noreply@example.org"
    message["To"] = "students@example.org"
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message, to_addrs=to)  # the envelope decides


def stored(mail_dir: Path) -> dict[str, str]:
    """{file name: Subject} of every .eml file in mail_dir."""
    return {
        path.name: message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"]
        for path in mail_dir.glob("*.eml")
    }


class SinkProcess:
    """`manage.py mailsink`, as `make run` starts it."""

    def __init__(self, mail_dir: Path, var_dir: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "mailsink", "--port", str(self.port), "--dir", str(mail_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: "Mail sink listening" in self.output, timeout=30, message=f"sink\n{self.output}")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output += line

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=15) == 0
        assert "Mail sink stopped after receiving" in self.output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def sinks(tmp_path):
    started: list[SinkProcess] = []

    def start() -> SinkProcess:
        sink = SinkProcess(tmp_path / "mail", tmp_path)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.kill()


def test_a_restarted_sink_keeps_the_mail_of_the_one_before(sinks, tmp_path):
    mail_dir = tmp_path / "mail"
    first = sinks()
    send(first.port, ["kari@example.org"], "first run, one")
    send(first.port, ["kari@example.org", "ole@example.org"], "first run, two")
    first.stop()
    before = stored(mail_dir)
    assert sorted(before.values()) == ["first run, one", "first run, two", "first run, two"]

    # A new sink counts from 1 again, in the same second if the restart is quick.
    second = sinks()
    send(second.port, ["kari@example.org"], "second run, one")
    send(second.port, ["kari@example.org", "ole@example.org"], "second run, two")
    second.stop()
    after = stored(mail_dir)
    assert after.items() >= before.items()
    assert sorted(after.values()) == sorted(
        [*before.values(), "second run, one", "second run, two", "second run, two"]
    )
    # Names sort by arrival (across the restart too), and each names its recipient.
    assert [after[name] for name in sorted(after)] == [
        "first run, one",
        "first run, two",
        "first run, two",
        "second run, one",
        "second run, two",
        "second run, two",
    ]
    assert sum(name.endswith("-ole@example.org.eml") for name in after) == 2
    assert [p.name for p in mail_dir.iterdir() if not p.name.endswith(".eml")] == []


def test_a_reader_never_sees_half_a_message(tmp_path):
    mail_dir = tmp_path / "mail"
    body = "x" * 2_000_000
    seen_sizes: set[int] = set()
    done = threading.Event()

    def read_while_written() -> None:
        while not done.is_set():
            for path in mail_dir.glob("*.eml"):
                seen_sizes.add(len(path.read_bytes()))

    with MailSink(mail_dir=mail_dir) as sink:
        reader = threading.Thread(target=read_while_written)
        reader.start()
        try:
            for n in range(8):
                send(sink.port, ["kari@example.org"], f"large {n}", body)
        finally:
            done.set()
            reader.join()
    sizes = {len(path.read_bytes()) for path in mail_dir.glob("*.eml")}
    assert len(list(mail_dir.glob("*.eml"))) == 8
    assert seen_sizes <= sizes and len(sizes) == 1


def test_long_and_odd_addresses_make_valid_file_names(tmp_path):
    mail_dir = tmp_path / "mail"
    long_local = "a" * 64
    long_address = f"{long_local}@{'b' * 60}.{'c' * 60}.{'d' * 60}.example"
    with MailSink(mail_dir=mail_dir) as sink:
        send(sink.port, [long_address, "../../etc/passwd@example.org"], "odd")
    names = sorted(p.name for p in mail_dir.iterdir())
    assert len(names) == 2
    assert all(len(name.encode()) < 255 and "/" not in name for name in names)
    assert all(p.parent == mail_dir for p in mail_dir.iterdir())
