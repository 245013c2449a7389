"""System checks: settings that would break a guarantee refuse to start (run_huey, runserver)."""

from __future__ import annotations

from django.core import checks

from messaging import channels, conf


@checks.register()
def lease_covers_a_send(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A worker hands a receiver to the mail server only while its lease outlasts the longest
    one send can take; a lease shorter than two sends could never send anything."""
    lease = conf.lease_seconds()
    problems = []
    for message_type in channels.registered_types():
        needed = channels.get_channel(message_type).seconds_per_receiver()
        if lease < 2 * needed:
            problems.append(
                checks.Error(
                    f"MESSAGING_LEASE_SECONDS ({lease}) is too short for the {message_type!r} channel: one "
                    f"send may take up to {needed:.0f} s (twice the mail server timeout), and a lease "
                    f"must cover at least two.",
                    hint=f"Set MESSAGING_LEASE_SECONDS to {int(2 * needed) + 1} or more, or lower the mail "
                    f"server timeout (EMAIL_URL ...?timeout=N).",
                    id="messaging.E001",
                )
            )
    if not 1 <= conf.sweep_minutes() <= 59:
        problems.append(
            checks.Error(
                f"MESSAGING_SWEEP_MINUTES must be between 1 and 59 (is {conf.sweep_minutes()}).",
                id="messaging.E002",
            )
        )
    return problems
