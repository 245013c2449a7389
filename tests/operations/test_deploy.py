"""Production settings pass `manage.py check --deploy`; no settings module starts without a
secret key, except the explicit development mode, which keeps a random one of its own."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_check(*args: str, module: str = "project.settings_production", **env):
    # Not the test run's own switches (the browser tests allow the ORM beside Playwright's loop).
    environment = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    environment |= {
        "DJANGO_SETTINGS_MODULE": module,
        "ALLOWED_HOSTS": "messages.example.org",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *(args or ("check", "--deploy", "--fail-level", "WARNING"))],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean():
    result = run_check(SECRET_KEY=secrets.token_urlsafe(60))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_every_settings_module_refuses_to_start_without_secret_key_in_one_line():
    for module in ("project.settings_production", "project.settings"):
        result = run_check(module=module)
        assert result.returncode != 0
        assert result.stderr.startswith("Refusing to start: SECRET_KEY is not set"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1  # one clear line, no traceback


def test_development_mode_makes_a_random_key_once_keeps_it_private_and_reuses_it(tmp_path):
    show_key = ("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    env = {"DJANGO_DEVELOPMENT": "1", "VAR_DIR": str(tmp_path)}
    first = run_check(*show_key, module="project.settings", **env)
    second = run_check(*show_key, module="project.settings", **env)
    other_machine = run_check(
        *show_key, module="project.settings", DJANGO_DEVELOPMENT="1", VAR_DIR=str(tmp_path / "b")
    )

    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50 and key == second.stdout.strip() != other_machine.stdout.strip()
    assert (tmp_path / "secret-key").read_text() == key
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600


def test_webhooks_without_a_secret_fail_the_deploy_check():
    result = run_check(SECRET_KEY=secrets.token_urlsafe(60), MESSAGING_TRACKING_WEBHOOKS="postmark")
    assert result.returncode != 0
    assert "messaging.E009" in result.stderr and "ANYMAIL_WEBHOOK_SECRET" in result.stderr
