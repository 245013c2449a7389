"""Test settings: the same as production-shaped settings, with a separate huey queue."""

import os
import secrets

# A key of this test run's own (never one in the repository); the consumers and servers the
# tests start inherit it, so what one process signs another verifies.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

from project.settings import *  # noqa: F403
from project.settings import HUEY, VAR_DIR

HUEY = {**HUEY, "name": "messaging-test", "immediate": os.environ.get("HUEY_IMMEDIATE", "1") == "1"}
if HUEY["huey_class"] == "huey.SqliteHuey":
    HUEY["filename"] = str(VAR_DIR / "test-huey.sqlite3")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MESSAGING_MAIL_DIR = VAR_DIR / "test-mail"
TEMPLATES[0]["DIRS"] = [*TEMPLATES[0]["DIRS"], BASE_DIR / "tests" / "templates"]  # noqa: F405
