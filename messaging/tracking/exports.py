"""CSV export of a message's receivers (the status page's table, with its filters).

Pure: `receiver_rows(queryset)` turns a MessageReceiver queryset into the header and one list of
cells per receiver, and `csv_chunks(rows)` writes them as CSV text chunks. Rows are read as
tuples with `values_list(...).iterator()`, a chunk at a time (a server-side cursor on
PostgreSQL): no model instances, no rendered bodies, so memory stays flat however many
receivers a message has. The view (messaging.tracking.views.exports) streams the chunks.

The file is opened in spreadsheet programs: a cell that starts with a character they read as
the start of a formula gets a leading apostrophe (OWASP, "CSV Injection"), and the text starts
with a byte order mark so that Excel reads it as UTF-8 (æøå).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from django.db.models import QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from messaging.models import MessageReceiver
from messaging.tracking import status_labels

CHUNK_SIZE = 2000  # rows per database round trip
ROWS_PER_WRITE = 500  # rows joined into one chunk of the response (~50 KB)
BOM = "\ufeff"
# What Excel, LibreOffice and Google Sheets take as the start of a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

FIELDS = (
    "id",
    "user__first_name",
    "user__last_name",
    "user__username",
    "send_to",
    "language",
    "status",
    "delivery_outcome",
    "sending_success_count",
    "sending_failed_count",
    "sent_datetime",
    "last_error",
    "outcome_detail",
    "cancel_reason",
    "permanent_failure",
    "digest_id",
)


class _Receiver(NamedTuple):
    """What status_labels.receiver_label reads of a receiver, without loading one."""

    status: str
    sending_failed_count: int
    cancel_reason: str
    permanent_failure: bool
    digest_id: int | None  # "Sent in a digest" / "In a digest being sent"


def header() -> list[str]:
    return [
        _("Receiver id"),
        _("Name"),
        _("Username"),
        _("Address"),
        _("Language"),
        _("Status"),
        _("Status label"),
        _("Delivery outcome"),
        _("Successful attempts"),
        _("Failed attempts"),
        _("Sent"),
        _("Last error or bounce detail"),
    ]


def receiver_rows(queryset: QuerySet) -> Iterator[list]:
    """The header, then one row per receiver of `queryset`, in id order.

    The language and the time zone are those active when it is called: a streamed response is
    read after the view has returned, when the request's language may be gone."""
    outcomes = {value: str(label) for value, label in MessageReceiver.Outcome.choices}
    language, tz = translation.get_language(), timezone.get_current_timezone()
    return _rows(queryset, header(), outcomes, language, tz)


def _rows(queryset: QuerySet, titles: list[str], outcomes: dict, language: str | None, tz) -> Iterator[list]:
    yield titles
    undelivered = set(MessageReceiver.UNDELIVERED)
    labels: dict[_Receiver, str] = {}  # the status page's label: a handful of distinct ones
    rows = queryset.order_by("id").values_list(*FIELDS).iterator(chunk_size=CHUNK_SIZE)
    for (
        pk,
        first_name,
        last_name,
        username,
        send_to,
        language_code,
        status,
        outcome,
        succeeded,
        failed,
        sent,
        last_error,
        outcome_detail,
        cancel_reason,
        permanent,
        digest_id,
    ) in rows:
        key = _Receiver(status, min(failed, 1), cancel_reason, permanent, digest_id and 1)
        if key not in labels:
            with translation.override(language):
                labels[key] = str(status_labels.receiver_label(key).text)
        if status == MessageReceiver.Status.SENT:
            # As the table shows it: a sent email has no error, but may have bounced since.
            problem = outcome_detail if outcome in undelivered else ""
        else:
            problem = last_error
        yield [
            pk,
            f"{first_name} {last_name}".strip(),  # as User.get_full_name()
            username,
            send_to,
            language_code,
            status,
            labels[key],
            outcomes.get(outcome, outcome),
            succeeded,
            failed,
            timezone.localtime(sent, tz).isoformat(timespec="seconds") if sent else "",
            problem,
        ]


def safe_cell(value):
    """A cell a spreadsheet shows as text: text that would start a formula gets an apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    """The file-like object csv.writer writes to: each write returns the text instead (the
    "pseudo-buffer" of Django's streaming CSV example)."""

    def write(self, value: str) -> str:
        return value


def csv_chunks(rows: Iterable[list], rows_per_write: int = ROWS_PER_WRITE) -> Iterator[str]:
    """`rows` as CSV text (a BOM first), a few hundred rows per chunk."""
    writer = csv.writer(_Echo())
    yield BOM
    pending: list[str] = []
    for row in rows:
        pending.append(writer.writerow([safe_cell(cell) for cell in row]))
        if len(pending) >= rows_per_write:
            yield "".join(pending)
            pending = []
    if pending:
        yield "".join(pending)
