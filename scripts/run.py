#!/usr/bin/env python3
"""Run the development stack in one terminal: web server, one huey worker and the mail sink.

`make run` calls this after `migrate` and `messaging_demo`. Each process's output is shown
line by line with a prefix ([web], [worker], [mail]). Ctrl-C or SIGTERM stops all three, and so
does any one of them exiting: each gets SIGINT (their graceful stop), then SIGTERM, then
SIGKILL if it still runs. When all are up, one "ready" line gives the address, the demo
staff login (from messaging_demo's VAR_DIR/demo-staff-password, or $MESSAGING_DEMO_PASSWORD)
and where mail goes. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 8.0
COLORS = {"web": "32", "worker": "36", "mail": "35", "run": "1"}
# messaging/management/commands/messaging_demo.py: STAFF_USERNAME, PASSWORD_ENV, PASSWORD_FILE.
DEMO_USERNAME = "staff"
DEMO_PASSWORD_ENV = "MESSAGING_DEMO_PASSWORD"
DEMO_PASSWORD_FILE = "demo-staff-password"


@dataclass
class Child:
    name: str
    args: list[str]
    port: int | None = None
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


class Output:
    """Prefixed, line-at-a-time output shared by the reader threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.width = max(len(name) for name in COLORS) + 2

    def line(self, name: str, text: str) -> None:
        prefix = f"[{name}]".ljust(self.width)
        if self.color:
            prefix = f"\033[{COLORS.get(name, '0')}m{prefix}\033[0m"
        with self.lock:
            sys.stdout.write(f"{prefix} {text.rstrip()}\n")
            sys.stdout.flush()


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (SO_REUSEADDR, as the servers use, so sockets
    in TIME_WAIT from a previous run do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def demo_password(env: dict[str, str], var_dir: Path) -> str:
    """What messaging_demo set: $MESSAGING_DEMO_PASSWORD, else the password it kept ("" if none)."""
    if env.get(DEMO_PASSWORD_ENV):
        return env[DEMO_PASSWORD_ENV]
    try:
        return (var_dir / DEMO_PASSWORD_FILE).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError:
        return ""


def shown_path(path: Path) -> str:
    """Relative to the checkout when inside it (var/mail/), else absolute."""
    path = path.resolve()
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}/"


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Runner:
    def __init__(self, children: list[Child], host: str, env: dict[str, str], var_dir: Path) -> None:
        self.children = children
        self.host = host
        self.env = env
        self.var_dir = var_dir
        self.out = Output()
        self.stop_requested = threading.Event()
        self.reason = ""

    def say(self, text: str) -> None:
        self.out.line("run", text)

    def on_signal(self, signum, _frame) -> None:
        if not self.stop_requested.is_set():
            self.reason = f"{signal.Signals(signum).name} received"
            self.stop_requested.set()

    def start(self) -> None:
        for child in self.children:
            child.process = subprocess.Popen(
                child.args,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                # Own process group: the terminal's Ctrl-C reaches only this script, which
                # then stops the children in order (and their children, if any).
                start_new_session=True,
            )
            child.reader = threading.Thread(target=self.pump, args=(child,), daemon=True)
            child.reader.start()
            self.say(f"started {child.name} (pid {child.process.pid}): {' '.join(child.args[1:])}")
        threading.Thread(target=self.announce_when_ready, daemon=True).start()

    def pump(self, child: Child) -> None:
        assert child.process and child.process.stdout
        for line in child.process.stdout:
            self.out.line(child.name, line)
        self.stop_requested.set()  # output closed: the child is exiting

    def announce_when_ready(self) -> None:
        deadline = time.monotonic() + 60
        waiting = [c for c in self.children if c.port]
        while waiting and time.monotonic() < deadline and not self.stop_requested.is_set():
            waiting = [c for c in waiting if not answers(self.host, c.port)]
            time.sleep(0.2)
        if not waiting and not self.stop_requested.is_set():
            web = next(c for c in self.children if c.name == "web")
            mail = next(c for c in self.children if c.name == "mail")
            url = f"http://{self.host}:{web.port}/"
            password = demo_password(self.env, self.var_dir)
            login = (
                f"sign in at {url} as {DEMO_USERNAME} / {password}"
                if password
                else f"{url} (no demo login yet: `python manage.py messaging_demo` creates one)"
            )
            self.say(
                f"ready: {login} (admin: /admin/); mail sink "
                f"smtp://{self.host}:{mail.port} stores mail in {shown_path(self.var_dir / 'mail')}. "
                "Ctrl-C stops everything."
            )

    def wait(self) -> int:
        """Until a signal arrives or a child exits; the exit status for this script."""
        while True:
            self.stop_requested.wait(0.5)
            exited = [c for c in self.children if c.process and c.process.poll() is not None]
            if exited:
                child = exited[0]
                code = child.process.returncode
                if not self.reason:
                    self.reason = f"{child.name} exited with status {code}"
                return 0 if self.reason.endswith("received") else (code or 1)
            if self.reason:
                return 0
            if self.stop_requested.is_set():
                time.sleep(0.1)  # a child closed its output and is about to exit

    def stop(self) -> None:
        running = [c for c in self.children if c.process and c.process.poll() is None]
        if running:
            self.say(f"{self.reason}; stopping {', '.join(c.name for c in running)}")
        for sig, grace in ((signal.SIGINT, GRACE_SECONDS), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            running = [c for c in running if c.process.poll() is None]
            if not running:
                break
            if sig != signal.SIGINT:
                self.say(f"{', '.join(c.name for c in running)} still running; sending {sig.name}")
            for child in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(c.process.poll() is None for c in running):
                time.sleep(0.1)
        for child in self.children:
            if child.process is None:
                continue
            child.process.wait()
            if child.reader:
                child.reader.join(timeout=2)
            # The group may hold grandchildren that outlived their parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
        self.say("all stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8000, help="Web server port (default: %(default)s).")
    parser.add_argument("--mail-port", type=int, default=8025, help="Mail sink port (default: %(default)s).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manage = [sys.executable, str(ROOT / "manage.py")]
    children = [
        Child("web", [*manage, "runserver", f"{args.host}:{args.port}", "--noreload"], port=args.port),
        Child("worker", [*manage, "run_huey"]),
        Child(
            "mail",
            [*manage, "mailsink", "--host", args.host, "--port", str(args.mail_port)],
            args.mail_port,
        ),
    ]
    busy = [c for c in children if c.port and port_in_use(args.host, c.port)]
    if busy:
        for child in busy:
            print(
                f"[run] Port {child.port} on {args.host} is already in use, so the {child.name} "
                "process cannot start. Is another `make run` still running? Stop it, or pick "
                "another port (--port / --mail-port).",
                file=sys.stderr,
            )
        return 2

    env = dict(os.environ)
    env.setdefault("EMAIL_URL", f"smtp://{args.host}:{args.mail_port}")
    # Bounces from the sink (mail to *@bounce-later.example) come back through a Maildir, read
    # every minute: the same path as a real relay's bounce mailbox.
    var_dir = ROOT / env.get("VAR_DIR", "var")  # relative to the checkout, as the children see it
    bounce_dir = var_dir / "bounces"
    env.setdefault("MESSAGING_BOUNCE_ADDRESS", "bounces@localhost")
    env.setdefault("MESSAGING_BOUNCE_MAILBOX", f"maildir://{bounce_dir.resolve()}")
    env.setdefault("MESSAGING_BOUNCE_POLL_MINUTES", "1")
    env.setdefault("DEBUG", "1")
    env["PYTHONUNBUFFERED"] = "1"

    runner = Runner(children, args.host, env, var_dir)
    signal.signal(signal.SIGINT, runner.on_signal)
    signal.signal(signal.SIGTERM, runner.on_signal)
    status = 1
    try:
        runner.start()
        status = runner.wait()
    finally:
        if not runner.reason:
            runner.reason = "stopping"
        runner.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
