"""Pages of a message's receivers at any depth, as cheap as the first (the status page's table
at a million receivers). Read only.

An OFFSET over the table's query would build and drop every joined row before the page (50,000
at page 2,000). Instead each page is found by ids alone, through an index, and only its own rows
are then loaded with their joins. Ordered by id (the table's default), the links of a page carry
an anchor: "page P starts at receiver X" (`seek=P.X`), so the pages near it start there
(`id >= X`) instead of at the first receiver, and page 2,000 costs what page 2 does. A page
asked for without an anchor (typed, or in another order) counts its ids from the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.paginator import EmptyPage, Page, PageNotAnInteger
from django.db.models import QuerySet
from django_tables2.paginators import LazyPaginator

SEEK_PARAM = "seek"
# Far more than a 64-bit id or any page has digits: a longer value is not an anchor.
MAX_DIGITS = 19


@dataclass(frozen=True)
class Anchor:
    """Page `page` of the table starts at the receiver with id `pk`."""

    page: int
    pk: int

    def __str__(self) -> str:
        return f"{self.page}.{self.pk}"


def parse_anchor(value: str | None) -> Anchor | None:
    page, _, pk = (value or "").partition(".")
    if not (page.isdigit() and pk.isdigit()) or max(len(page), len(pk)) > MAX_DIGITS:
        return None
    return Anchor(int(page), int(pk)) if int(page) >= 1 else None


def _by_id(queryset: QuerySet) -> bool:
    """Whether the queryset is ordered by id alone, ascending (what an anchor can say)."""
    order = queryset.query.order_by or queryset.model._meta.ordering
    return tuple(order) in (("id",), ("pk",))


class SeekPaginator(LazyPaginator):
    """A LazyPaginator (no COUNT; it knows there is a next page by reading one row more) over an
    ordered queryset, that reads a page's ids first and then only those rows (see the module)."""

    def __init__(
        self,
        object_list: QuerySet,
        per_page: int,
        anchor: Anchor | None = None,
        rows: QuerySet | None = None,
        **kwargs,
    ):
        super().__init__(object_list, per_page, **kwargs)
        self.anchor = anchor if _by_id(object_list) else None
        # Where a page's rows are loaded from by id: without the filters, which chose the ids
        # already (a search would otherwise be run again to load 25 rows).
        self.rows = rows if rows is not None else object_list
        self.link_anchor = ""  # what the page's links carry: the anchor of the page shown

    def page(self, number) -> Page:
        number = self.validate_number(number or 1)
        ids, has_next = self._page_ids(number)
        if not ids and number != 1:
            raise EmptyPage("That page contains no results")
        self._num_pages = number + 1 if has_next else number
        self._final_num_pages = None if has_next else number
        if ids and _by_id(self.object_list):
            self.link_anchor = str(Anchor(number, ids[0]))
        return Page(self._rows(ids), number, self)

    def _page_ids(self, number: int) -> tuple[list[int], bool]:
        """The ids of page `number`, in order, and whether a page follows it."""
        keys = self.object_list.values_list("pk", flat=True)
        size = self.per_page
        anchor = self.anchor if number != 1 else None  # the first page is where it always was
        if anchor is not None and number < anchor.page:
            # Before the anchor: read backwards from it; the anchor's own page follows.
            skip = (anchor.page - number - 1) * size
            ids = list(keys.filter(pk__lt=anchor.pk).order_by("-pk")[skip : skip + size])
            return ids[::-1], True
        if anchor is not None:
            keys, number = keys.filter(pk__gte=anchor.pk), number - anchor.page + 1
        skip = (number - 1) * size
        ids = list(keys[skip : skip + size + 1])
        return ids[:size], len(ids) > size

    def _rows(self, ids: list[int]) -> list:
        """The rows of `ids`, with everything the table shows, in the order of `ids`."""
        if not ids:
            return []
        rows = {row.pk: row for row in self.rows.order_by().filter(pk__in=ids)}
        return [rows[pk] for pk in ids if pk in rows]


def paginate(table, params, per_page: int, rows: QuerySet | None = None) -> None:
    """Give `table` (django-tables2, its queryset ordered already: RequestConfig without
    pagination) the page `params` ask for, as RequestConfig's pagination would (an invalid or
    empty page: the first), through a SeekPaginator; `rows`: see SeekPaginator. `per_page` is
    not the request's to choose."""
    anchor = parse_anchor(params.get(SEEK_PARAM))
    paginator = SeekPaginator(table.data.data, per_page, anchor=anchor, rows=rows)
    try:
        page = paginator.page(params.get(table.prefixed_page_field) or 1)
    except (PageNotAnInteger, EmptyPage):
        page = paginator.page(1)
    table.paginator, table.page = paginator, page
