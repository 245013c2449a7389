"""Indexes for the live status page at a million receivers (issue: the status page at scale).

- receiver_failure_reason also holds permanent_failure: failures by reason read the index alone.
- receiver_awaiting_retry: whether a finished message still has retries coming, without reading
  its permanent failures.
- PostgreSQL only: trigram indexes (pg_trgm) for the people search (messaging.tracking.search):
  users by UPPER(first_name || ' ' || last_name || ' ' || username || ' ' || email), exactly as
  search.SearchText and Django's icontains spell it, and other addresses by UPPER(email). A
  database where the extension cannot be created still works: the search reads every user.
"""

import logging

from django.conf import settings
from django.db import DatabaseError, migrations, models, transaction

logger = logging.getLogger(__name__)

USER_SEARCH_INDEX = "messaging_user_search"
EMAIL_SEARCH_INDEX = "messaging_useremail_search"


def add_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    users = quote(apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table)
    emails = quote(apps.get_model("messaging", "UserEmail")._meta.db_table)
    text = " || ' ' || ".join(quote(name) for name in ("first_name", "last_name", "username", "email"))
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as error:  # not allowed to: the search works, reading every user
        logger.warning("No trigram indexes for the people search (CREATE EXTENSION pg_trgm: %s)", error)
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {quote(USER_SEARCH_INDEX)} ON {users} "
        f"USING gin (UPPER(({text})::text) gin_trgm_ops)"
    )
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {quote(EMAIL_SEARCH_INDEX)} ON {emails} "
        f"USING gin (UPPER({quote('email')}::text) gin_trgm_ops)"
    )


def remove_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in (USER_SEARCH_INDEX, EMAIL_SEARCH_INDEX):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_receiver_in_flight"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(model_name="messagereceiver", name="receiver_failure_reason"),
        migrations.AddIndex(
            model_name="messagereceiver",
            index=models.Index(
                fields=["message", "status", "last_error", "permanent_failure"],
                name="receiver_failure_reason",
            ),
        ),
        migrations.AddIndex(
            model_name="messagereceiver",
            index=models.Index(
                condition=models.Q(
                    ("next_attempt_datetime__isnull", False),
                    ("permanent_failure", False),
                    ("status", "failed"),
                ),
                fields=["message"],
                name="receiver_awaiting_retry",
            ),
        ),
        migrations.RunPython(add_search_indexes, remove_search_indexes, elidable=False),
    ]
