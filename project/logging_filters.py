"""Logging filters referenced from LOGGING in project/settings.py."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied


class PermissionDeniedWithoutTraceback(logging.Filter):
    """Keep Django's one-line "Forbidden (Permission denied): /path" warning but drop its
    traceback: a 403 is expected (a student opening a staff page), not a bug to debug.
    Attached to the django.request logger, so every handler sees the shortened record;
    500s keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403 and record.exc_info:
            exception = record.exc_info[1]
            if isinstance(exception, PermissionDenied):
                record.exc_info = None
                record.exc_text = None
        return True
