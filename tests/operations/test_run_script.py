"""scripts/run.py: starts web, worker and mail sink together and stops all of them together."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email import message_from_bytes
from pathlib import Path

import pytest

from messaging.operations.mailsink import free_port
from tests.conftest import ROOT, wait_until

SCRIPT = ROOT / "scripts" / "run.py"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it only waits for its parent to reap it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def script_env(var_dir: Path) -> dict[str, str]:
    leave_out = {"DATABASE_URL", "REDIS_URL", "EMAIL_URL", "MESSAGING_DEMO_PASSWORD"}
    env = {k: v for k, v in os.environ.items() if k not in leave_out}
    return env | {"DJANGO_SETTINGS_MODULE": "project.settings", "VAR_DIR": str(var_dir), "NO_COLOR": "1"}


def manage(var_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=script_env(var_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class RunScript:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.web_port, self.mail_port = free_port(), free_port()
        env = script_env(tmp_path)
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--port",
                str(self.web_port),
                "--mail-port",
                str(self.mail_port),
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def child_pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", self.output)}

    def wait_ready(self) -> str:
        wait_until(lambda: "[run]    ready:" in self.output, timeout=60, message=f"ready\n{self.output}")
        return next(line for line in self.lines if line.startswith("[run]    ready:"))

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.reader.join(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        for pid in self.child_pids().values():
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def run_script(tmp_path):
    started: list[RunScript] = []

    def start(*args: str) -> RunScript:
        script = RunScript(tmp_path, *args)
        started.append(script)
        return script

    yield start
    for script in started:
        script.kill()


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--port", str(port), "--mail-port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "started" not in result.stdout


def test_starts_all_three_and_ctrl_c_stops_them(run_script, tmp_path):
    script = run_script()
    assert "(no demo login yet: " in script.wait_ready()
    pids = script.child_pids()
    assert set(pids) == {"web", "worker", "mail"}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{script.web_port}/admin/login/", timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as exc:  # no database here: the server still answers
        status = exc.code
    assert status in (200, 500)
    wait_until(lambda: "[mail]   Mail sink listening" in script.output, timeout=30, message="mail sink")
    wait_until(lambda: "[worker]" in script.output, timeout=30, message="worker output")
    # The sink's bounce reports go to the Maildir the worker reads (README: make run).
    bounces = (tmp_path / "bounces").resolve()
    assert f"a delivery report in {bounces})" in script.output
    worker_env = Path(f"/proc/{pids['worker']}/environ").read_bytes().split(b"\0")
    assert f"MESSAGING_BOUNCE_MAILBOX=maildir://{bounces}".encode() in worker_env
    assert b"MESSAGING_BOUNCE_ADDRESS=bounces@localhost" in worker_env

    script.process.send_signal(signal.SIGINT)
    assert script.finish() == 0
    assert "SIGINT received; stopping" in script.output
    assert "all stopped" in script.output
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []


def test_a_child_exiting_stops_the_others(run_script):
    script = run_script()
    script.wait_ready()
    pids = script.child_pids()
    os.kill(pids["mail"], signal.SIGKILL)
    assert script.finish() != 0
    assert "mail exited with status" in script.output
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    time.sleep(0.2)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", script.web_port))  # nothing listens on the web port any more


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 302 itself is the answer


def sign_in(base_url: str, username: str, password: str) -> urllib.request.OpenerDirector:
    cookies = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    opener = urllib.request.build_opener(cookies)
    with opener.open(f"{base_url}login/", timeout=10) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())[1]
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(cookies, NoRedirect).open(
            f"{base_url}login/", data=form.encode(), timeout=10
        )
    assert redirect.value.code == 302, f"sign-in as {username} failed"
    return opener


def status_of(opener: urllib.request.OpenerDirector, url: str) -> int:
    try:
        with opener.open(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def make_run(run_script, var_dir: Path, mail_count: int) -> str:
    """One `make run` after migrate: messaging_demo, then the script until ready; a staff and a
    student request and one mail, then Ctrl-C. The staff password it used."""
    (password,) = re.findall(r"as staff / (\S+)", manage(var_dir, "messaging_demo", "--users", "5"))
    script = run_script()
    assert script.wait_ready() == (
        f"[run]    ready: sign in at http://127.0.0.1:{script.web_port}/ as staff / {password} "
        f"(admin: /admin/); mail sink smtp://127.0.0.1:{script.mail_port} stores mail in "
        f"{(var_dir / 'mail').resolve()}/. Ctrl-C stops everything."
    )
    base_url = f"http://127.0.0.1:{script.web_port}/"
    assert status_of(sign_in(base_url, "staff", password), f"{base_url}messages/") == 200
    student = sign_in(base_url, "student", "student-password-1")
    assert status_of(student, f"{base_url}messages/") == 403
    wait_until(lambda: "Forbidden (Permission denied): /messages/" in script.output, timeout=10)
    with smtplib.SMTP("127.0.0.1", script.mail_port, timeout=10) as smtp:
        smtp.sendmail("noreply@example.org", ["kari@example.org"], f"Subject: run {mail_count}\r\n\r\nHi\r\n")
    wait_until(lambda: len(list((var_dir / "mail").glob("*.eml"))) == mail_count, timeout=10)
    script.process.send_signal(signal.SIGINT)
    assert script.finish() == 0
    assert "Traceback" not in script.output, script.output
    return password


def test_make_run_twice_as_a_newcomer(run_script, tmp_path):
    """The same login both times, repeated on the ready line; the first run's mail is still there
    after the second; a student on a staff page is one line in the console, not a traceback."""
    manage(tmp_path, "migrate", "--noinput")
    manage(
        tmp_path,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('student', password='student-password-1')",
    )
    first = make_run(run_script, tmp_path, mail_count=1)
    second = make_run(run_script, tmp_path, mail_count=2)
    assert first == second
    subjects = sorted(
        message_from_bytes(path.read_bytes())["Subject"] for path in (tmp_path / "mail").glob("*.eml")
    )
    assert subjects == ["run 1", "run 2"]
