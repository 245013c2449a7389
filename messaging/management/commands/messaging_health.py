"""`manage.py messaging_health`: for monitoring (cron, Nagios, a Kubernetes probe, ...).

Prints one line per figure, then "OK" or each problem; exits 0 when healthy and 1 when no
consumer has a fresh heartbeat or due work has waited longer than MESSAGING_HEALTH_MAX_WAIT_SECONDS
(or --max-wait). See messaging.operations.health for what each figure means.
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from messaging.operations.health import duration, health_report


class Command(BaseCommand):
    help = (
        "Check that the messaging engine is working: exits 1 when no consumer has a fresh heartbeat "
        "or due work has waited too long, else 0."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-wait",
            type=int,
            metavar="SECONDS",
            help="Longest due work may wait (default: MESSAGING_HEALTH_MAX_WAIT_SECONDS).",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, max_wait=None, **options):
        if max_wait is not None and max_wait < 0:
            raise CommandError("--max-wait must not be negative.")
        report = health_report(max_wait_seconds=max_wait)
        problems = report.problems()
        if options["json"]:
            self.stdout.write(_json(report.as_dict()))
        else:
            self.stdout.write(self._text(report))
            for problem in problems:
                self.stdout.write(f"PROBLEM: {problem}")
            if not problems:
                self.stdout.write("OK")
        if problems:
            # call_command raises it; manage.py prints it to stderr and exits with returncode.
            raise CommandError(f"Unhealthy: {len(problems)} problem(s).", returncode=1)

    def _text(self, report) -> str:
        alive = ", ".join(c.name for c in report.consumers if c.alive)
        sweeper = (
            f"{report.sweeper_last_run.isoformat()} ({duration(report.sweeper_age_seconds)} ago)"
            if report.sweeper_last_run
            else "never"
        )
        counts = " ".join(f"{status}={n}" for status, n in report.message_counts.items())
        oldest = duration(report.oldest_waiting_seconds) if report.oldest_waiting_seconds is not None else "-"
        failures = "; ".join(f"{n} x {reason or '(none)'}" for reason, n in report.failures) or "none"
        lines = [
            f"consumers alive: {report.consumers_alive}" + (f" ({alive})" if alive else ""),
            f"sweeper last run: {sweeper}",
            f"messages: {counts}",
            f"receivers waiting: {report.receivers_waiting}",
            f"oldest waiting receiver: {oldest}",
            f"sends in the last minute: {report.sends_last_minute}",
            f"failures (last {report.failure_days} days): {failures}",
            f"overdue: {duration(report.overdue_seconds)} (limit {duration(report.max_wait_seconds)})",
        ]
        return "\n".join(lines)


def _json(data: dict) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, indent=2)
