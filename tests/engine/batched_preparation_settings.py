"""The test settings for consumers that prepare in small batches under a short lease, so that a
kill lands mid-preparation and the sweeper finds the lease run out within seconds
(tests/engine/test_batched_preparation.py)."""

from project.settings_test import *  # noqa: F403

MESSAGING_PREPARATION_BATCH_SIZE = 100
MESSAGING_PREPARATION_LEASE_SECONDS = 3
