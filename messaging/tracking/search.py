"""Finding people by what staff type (issue 13, issue 30): the one rule the People page, the
compose page's recipient search and the status page's receiver search share. Every word of the
query must be part of the user's first name, last name, username or one of their addresses, in
any order and any case: "Ava Harris", "harris ava" and "av harr" find Ava Harris.

It reads users, never the receivers table (a page that wants receivers takes those of the users
found: far fewer than a big message's receivers, and indexed by user)."""

from __future__ import annotations

from functools import reduce

from django.contrib.auth import get_user_model
from django.db.models import F, Func, Q, QuerySet, TextField

from messaging.models import MessageReceiver, UserEmail

User = get_user_model()

# Each word adds its own conditions (and subqueries): a pasted paragraph must not become a
# query with hundreds of them. No name, username or address needs more words than this.
MAX_WORDS = 8


def query_words(query: str) -> list[str]:
    """The distinct words of a search, without NUL (PostgreSQL refuses it in a text parameter)."""
    words = query.replace("\0", "").split()
    return list(dict.fromkeys(words))[:MAX_WORDS]


class SearchText(Func):
    """A user's first name, last name, username and email in one text, a space between each: a
    search word (never holding a space) is part of one of them exactly when it is part of this.
    On PostgreSQL a trigram index on UPPER(this) (migration 0010) finds the users of a search
    among a million without reading them all; the SQL must stay as that index spells it."""

    template = "(%(expressions)s)"
    arg_joiner = " || ' ' || "
    output_field = TextField()

    def __init__(self):
        super().__init__(F("first_name"), F("last_name"), F("username"), F("email"))


def _other_addresses(word: str, past_addresses: bool) -> QuerySet:
    """Ids of the users with an address other than their email that holds `word`: another of
    theirs (UserEmail) or, with `past_addresses` and a word that is (part of) an address, one the
    engine sent to before they changed theirs. The receivers table is the one big table and has
    no index a substring search can use, so it is read only for such a word."""
    found = UserEmail.objects.filter(email__icontains=word).order_by().values("user_id")
    if past_addresses and "@" in word:
        sent_to = MessageReceiver.objects.filter(send_to__icontains=word).order_by().values("user_id")
        found = found.union(sent_to)
    return found


def matching_users(query: str, past_addresses: bool = True) -> QuerySet:
    """Users (active or not) matching every word of `query`, in any order and any case: "Sam
    Staff", "staff sam", "sam st", a username or an address. None for a blank query. Unordered.
    The one rule for finding people: the People page, the compose page's recipient search and
    the status page's receiver search all use it.
    `past_addresses`: also addresses the engine sent to before a user changed theirs (a scan of
    the receivers table; the compose and status page searches leave it out)."""
    if not query_words(query):
        return User.objects.none()
    return User.objects.filter(pk__in=matching_user_ids(query, past_addresses))


def matching_user_ids(query: str, past_addresses: bool = True) -> QuerySet:
    """The ids of matching_users(query), as one query (a union: usable as a subquery, sliced or
    listed, without reading the users again). In two parts: the users whose own fields hold every
    word (on PostgreSQL a single trigram index scan for all the words), and the few with another
    address holding one of the words, checked word by word (so "kari gmail" finds Kari whose
    second address is at Gmail). A blank query: none."""
    words = query_words(query)
    users = User.objects.alias(search_text=SearchText()).order_by()
    if not words:
        return users.none().values("pk")
    by_own_fields = users.filter(*(Q(search_text__icontains=word) for word in words))
    elsewhere = {word: _other_addresses(word, past_addresses) for word in words}
    candidates = reduce(lambda found, more: found.union(more), elsewhere.values())
    every_word = Q()
    for word in words:
        every_word &= Q(search_text__icontains=word) | Q(pk__in=elsewhere[word])
    by_other_address = users.filter(pk__in=candidates).filter(every_word)
    return by_own_fields.values("pk").union(by_other_address.values("pk"))
