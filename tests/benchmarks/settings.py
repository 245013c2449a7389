"""Benchmark settings: the production-shaped settings on a separate database and huey queue.

SQLite (the default): var/bench/bench.sqlite3 and var/bench/huey.sqlite3.
PostgreSQL (DATABASE_URL): the database `messaging_bench` on the same server.
Redis (REDIS_URL): the huey name `messaging-bench`, so the dev queue is untouched.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import DATABASES, HUEY, INSTALLED_APPS, VAR_DIR

BENCH_DIR = VAR_DIR / "bench"
BENCH_DIR.mkdir(parents=True, exist_ok=True)

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["NAME"] = str(BENCH_DIR / "bench.sqlite3")
else:
    DATABASES["default"]["NAME"] = os.environ.get("BENCH_DATABASE_NAME", "messaging_bench")

HUEY = {**HUEY, "name": "messaging-bench", "immediate": False}
if HUEY["huey_class"] == "huey.SqliteHuey":
    HUEY["filename"] = str(BENCH_DIR / "huey.sqlite3")

# BENCH_FAST_EMAIL=1: the engine builds its emails with messaging.channels.fast_email
# (the change proposed for messaging/channels/email.py), applied by a tiny benchmark app.
if os.environ.get("BENCH_FAST_EMAIL") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.benchmarks.fastpatch"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"messaging": {"handlers": ["console"], "level": "WARNING"}},
}
