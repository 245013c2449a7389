"""The benchmark settings plus django-post_office, on the same database and SMTP sink.

post_office 3.12 delivers through Django 6.1's MAILERS["default"] (the SMTP sink), so the
only additions are the app and post_office's defaults (BATCH_SIZE 100, THREADS_PER_PROCESS 5,
LOG_LEVEL 2), i.e. its recommended configuration.
"""

from tests.benchmarks.settings import *  # noqa: F403
from tests.benchmarks.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]
POST_OFFICE = {}
