#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        if type(exc).__name__ != "MissingSecretKey":  # project.settings refused to start
            raise
        sys.exit(f"Refusing to start: {exc}")
