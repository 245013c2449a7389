"""Benchmark settings: the production-shaped settings on a separate database and huey queue.

SQLite (the default): VAR_DIR/bench/bench.sqlite3 and VAR_DIR/bench/huey.sqlite3 (VAR_DIR: var/).
PostgreSQL (DATABASE_URL): `<its database>_bench` (e.g. `messaging_bench`) on the same server.
Redis (REDIS_URL): the huey name `messaging-bench`, so the dev queue is untouched.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import DATABASES, HUEY, VAR_DIR

BENCH_DIR = VAR_DIR / "bench"
BENCH_DIR.mkdir(parents=True, exist_ok=True)

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["NAME"] = str(BENCH_DIR / "bench.sqlite3")
else:
    # Derived from DATABASE_URL's name (…/messaging → messaging_bench), on the same server.
    _name = DATABASES["default"]["NAME"]
    DATABASES["default"]["NAME"] = os.environ.get(
        "BENCH_DATABASE_NAME", _name if _name.endswith("_bench") else f"{_name}_bench"
    )

HUEY = {**HUEY, "name": "messaging-bench", "immediate": False}
if HUEY["huey_class"] == "huey.SqliteHuey":
    HUEY["filename"] = str(BENCH_DIR / "huey.sqlite3")

# Warnings, and delivery's INFO lines (a few per send: the lanes it settled on, which the
# harness reads from the consumers' logs per worker process, hence the process id).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "pid"}},
    "loggers": {
        "messaging": {"handlers": ["console"], "level": "WARNING"},
        "messaging.engine.delivery": {"level": "INFO"},
    },
}
