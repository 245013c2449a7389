"""The pool of open SMTP sessions (messaging/engine/channels/mailer_pool.py)."""

from __future__ import annotations

import pytest

from messaging.engine.channels import mailer_pool
from messaging.engine.channels.mailer_pool import MailerPool

LOCMEM = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}


@pytest.fixture
def pool(settings):
    settings.MAILERS = LOCMEM
    settings.MESSAGING_SMTP_CONNECTIONS = 2
    return MailerPool("default")


def checkout(pool: MailerPool):
    with pool.mailer() as mailer:
        return mailer


def test_a_session_is_reused_by_the_next_lane(pool):
    assert checkout(pool) is checkout(pool)


def test_a_session_idle_too_long_is_closed_not_reused(pool, monkeypatch):
    first = checkout(pool)
    monkeypatch.setattr(mailer_pool, "IDLE_SECONDS", -1)
    assert checkout(pool) is not first


def test_changed_mailer_settings_retire_every_pooled_session(pool, settings):
    first = checkout(pool)
    settings.MAILERS = {"default": {**LOCMEM["default"], "OPTIONS": {}}}
    assert checkout(pool) is not first


def test_a_session_that_failed_is_not_pooled(pool):
    with pytest.raises(RuntimeError), pool.mailer() as mailer:
        failed = mailer
        raise RuntimeError("the server went away")
    assert checkout(pool) is not failed


def test_no_more_idle_sessions_are_kept_than_connections(pool):
    lanes = [pool.mailer() for _ in range(3)]
    mailers = [lane.__enter__() for lane in lanes]
    for lane in lanes:
        lane.__exit__(None, None, None)
    assert [mailer for mailer, _since in pool._idle] == mailers[:2]  # the third was closed
