"""Test settings: the same as production-shaped settings, with a separate huey queue."""

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# A key of this test run's own (never one in the repository); the consumers and servers the
# tests start inherit it, so what one process signs another verifies.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

# Under pytest-xdist (`make test-services` runs two workers) each worker gets a Redis database
# and a var/ directory of its own (PostgreSQL: pytest-django names a test database per worker).
# Done once, in the worker: the consumers and scripts it starts inherit the rewritten values.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and not os.environ.get("MESSAGING_TEST_WORKER_ISOLATED"):
    os.environ["MESSAGING_TEST_WORKER_ISOLATED"] = _worker
    if os.environ.get("REDIS_URL"):
        _url = urlsplit(os.environ["REDIS_URL"])
        _db = int(_url.path.strip("/") or 0) - int(_worker[2:])
        os.environ["REDIS_URL"] = urlunsplit(_url._replace(path=f"/{_db % 16}"))
    _var = os.environ.get("VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var")
    os.environ["VAR_DIR"] = str(Path(_var) / _worker)

from project.settings import *  # noqa: E402, F403
from project.settings import HUEY, VAR_DIR  # noqa: E402

HUEY = {**HUEY, "name": "messaging-test", "immediate": os.environ.get("HUEY_IMMEDIATE", "1") == "1"}
if HUEY["huey_class"] == "huey.SqliteHuey":
    HUEY["filename"] = str(VAR_DIR / "test-huey.sqlite3")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MESSAGING_MAIL_DIR = VAR_DIR / "test-mail"
TEMPLATES[0]["DIRS"] = [*TEMPLATES[0]["DIRS"], BASE_DIR / "tests" / "templates"]  # noqa: F405
