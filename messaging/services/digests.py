"""Digests: a user's held receivers go out together, one email per period, at the local digest
time (MESSAGING_DIGEST_TIME in the user's time zone; weekly ones on MESSAGING_DIGEST_WEEKDAY)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from messaging import conf
from messaging.models import DeliveryMode


def user_zone(user) -> ZoneInfo:
    """The user's time zone (their messaging profile's), else TIME_ZONE; an unknown zone name
    falls back too."""
    profile = getattr(user, "messaging_profile", None)
    name = (profile.time_zone if profile else "") or settings.TIME_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(settings.TIME_ZONE)


def due_at(mode: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first digest time of `mode` strictly after `after`, in UTC. Local wall-clock time: a
    daily digest at 07:00 is at 07:00 on both sides of a DST change (23 or 25 hours apart)."""
    hour, minute = conf.digest_time()
    day = after.astimezone(zone).date()
    while True:
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(ZoneInfo("UTC"))
        if candidate > after and (mode == DeliveryMode.DAILY or day.weekday() == conf.digest_weekday()):
            return candidate
        day += timedelta(days=1)
