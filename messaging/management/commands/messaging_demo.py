"""Demo data for trying the app by hand (`make run` runs it after migrate).

Idempotent: users, groups and addresses are derived from a fixed seed and brought to the same
state on every run; sample drafts are created only when no draft of the same sample exists.

The staff password is random, chosen once and kept in VAR_DIR/demo-staff-password, so it is the
same on every run and `scripts/run.py` can repeat it; --password or MESSAGING_DEMO_PASSWORD sets
it (and it is kept). Never a fixed password: a demo database that ends up somewhere reachable
must not have a superuser anyone can guess.
"""

from __future__ import annotations

import os
import random
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from messaging.compose import composing, message_templates
from messaging.models import (
    DeliveryMode,
    Message,
    MessageTemplate,
    MessagingProfile,
    NotificationPreference,
    UserEmail,
)

SEED = 1000
STAFF_USERNAME = "staff"
PASSWORD_ENV = "MESSAGING_DEMO_PASSWORD"
PASSWORD_FILE = "demo-staff-password"  # in VAR_DIR; scripts/run.py reads it too
DOMAIN = "example.org"
TEMPFAIL_DOMAIN = "tempfail.example"  # the dev mail sink answers 451
BOUNCE_DOMAIN = "bounce.example"  # the dev mail sink answers 550
LATER_BOUNCE_DOMAIN = "bounce-later.example"  # accepted, then a bounce report to the bounce mailbox

NORWEGIAN_FIRST = [
    "Ingrid",
    "Ole",
    "Kari",
    "Lars",
    "Nora",
    "Emma",
    "Jakob",
    "Sofie",
    "Henrik",
    "Ida",
    "Magnus",
    "Thea",
    "Sindre",
    "Marte",
    "Eirik",
    "Silje",
    "Håkon",
    "Ragnhild",
    "Øystein",
    "Åse",
    "Torbjørn",
    "Solveig",
    "Bjørn",
    "Sigrid",
    "Kristian",
    "Maja",
    "Mathias",
    "Hedda",
    "Vetle",
    "Tuva",
    "Aksel",
    "Live",
    "Jonas",
    "Synnøve",
    "Espen",
    "Guro",
    "Anders",
    "Frida",
    "Halvor",
    "Linnea",
    "Sverre",
    "Astrid",
    "Trond",
    "Mari",
]
NORWEGIAN_LAST = [
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Johannessen",
    "Andreassen",
    "Jacobsen",
    "Dahl",
    "Jørgensen",
    "Halvorsen",
    "Henriksen",
    "Lund",
    "Sørensen",
    "Strand",
    "Moen",
    "Solberg",
    "Bakken",
    "Kristoffersen",
    "Aasen",
    "Lie",
    "Nygård",
    "Ødegård",
    "Bråten",
    "Løken",
    "Fjeld",
    "Sæther",
    "Vik",
    "Myhre",
]
ENGLISH_FIRST = [
    "Oliver",
    "Amelia",
    "George",
    "Isla",
    "Harry",
    "Ava",
    "Jack",
    "Mia",
    "Charlie",
    "Grace",
    "Thomas",
    "Emily",
    "James",
    "Olivia",
    "William",
    "Sophie",
    "Daniel",
    "Hannah",
    "Samuel",
    "Chloe",
    "Priya",
    "Arjun",
    "Wei",
    "Mei",
    "Carlos",
    "Lucía",
    "Ahmed",
    "Fatima",
    "Liam",
    "Zoe",
]
ENGLISH_LAST = [
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Walker",
    "Wright",
    "Robinson",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Clarke",
    "Patel",
    "Chen",
    "Nguyen",
    "Garcia",
    "Khan",
]

GROUPS = ["INF1000 students", "INF1000 examiners", "MAT1100 students", "Staff"]

# Address kinds, so that every path of the engine can be seen from the UI.
NORMAL, NO_ADDRESS, SEVERAL, TEMPFAIL, BOUNCE = "normal", "none", "several", "tempfail", "bounce"
LATER_BOUNCE = "later_bounce"
SPECIAL_ADDRESSES = {NO_ADDRESS: 4, SEVERAL: 6, TEMPFAIL: 3, BOUNCE: 3, LATER_BOUNCE: 2}
EXAMINERS = 8
# {context type: (mode, share of students who chose it)}
DEMO_PREFERENCES = {
    Message.ContextType.FEEDBACK: (DeliveryMode.DAILY, 0.15),
    Message.ContextType.COMMENT: (DeliveryMode.WEEKLY, 0.1),
    Message.ContextType.OTHER: (DeliveryMode.OFF, 0.08),
}

SAMPLES = {
    "inf1000-welcome": {
        "context_type": Message.ContextType.OTHER,
        "groups": ["INF1000 students", "INF1000 examiners"],
        "chosen": "failures",
        "content": {
            "en": {
                "subject": "Welcome to INF1000",
                "body": (
                    "<p>Hello {{ recipient_first_name }},</p>"
                    "<p>Welcome to <strong>INF1000 &ndash; Introduction to programming</strong>. "
                    "The first lecture is on Monday at 10:15 in Store auditorium.</p>"
                    "<p>Your username is <code>{{ recipient_username }}</code>.</p>"
                    "<p>Best regards,<br>The INF1000 team</p>"
                ),
            },
            "nb": {
                "subject": "Velkommen til INF1000",
                "body": (
                    "<p>Hei {{ recipient_first_name }},</p>"
                    "<p>Velkommen til <strong>INF1000 &ndash; Grunnkurs i programmering</strong>. "
                    "Første forelesning er mandag kl. 10.15 i Store auditorium.</p>"
                    "<p>Brukernavnet ditt er <code>{{ recipient_username }}</code>.</p>"
                    "<p>Hilsen INF1000-teamet</p>"
                ),
            },
        },
    },
    "mat1100-deadline": {
        "context_type": Message.ContextType.DEADLINE_MOVED,
        "groups": ["MAT1100 students"],
        "chosen": "",
        "content": {
            "en": {
                "subject": "MAT1100: the deadline for assignment 2 has moved",
                "body": (
                    "<p>Dear {{ recipient_name }},</p>"
                    "<p>The deadline for <em>Mandatory assignment 2</em> has moved to "
                    "<strong>Friday 14 March at 23:59</strong>.</p>"
                    '<p>See <a href="https://www.example.org/mat1100">the course page</a> for details.</p>'
                ),
            },
            # No Norwegian variant: nb receivers get the English text (the fallback).
        },
    },
}

# Message templates staff can start from (the compose page's "Start from a template").
TEMPLATES = [
    {
        "name": "Room change for an exam",
        "context_type": Message.ContextType.DEADLINE_MOVED,
        "content": {
            "en": {
                "subject": "Your exam has moved to another room",
                "body": (
                    "<p>Hello {{ recipient_first_name }},</p>"
                    "<p>Your exam has moved to <strong>room …</strong>. The time is unchanged.</p>"
                    "<ul><li><p>Bring your student card.</p></li>"
                    "<li><p>Arrive 15 minutes early.</p></li></ul>"
                ),
            },
            "nb": {
                "subject": "Eksamenen din er flyttet til et annet rom",
                "body": (
                    "<p>Hei {{ recipient_first_name }},</p>"
                    "<p>Eksamenen din er flyttet til <strong>rom …</strong>. Tidspunktet er det samme.</p>"
                    "<ul><li><p>Ta med studentkortet.</p></li><li><p>Møt opp 15 minutter før.</p></li></ul>"
                ),
            },
        },
    },
]


@dataclass
class UserSpec:
    username: str
    first_name: str
    last_name: str
    language: str
    kind: str = NORMAL
    groups: set[str] = field(default_factory=set)
    preferences: dict[str, str] = field(default_factory=dict)  # {context type: delivery mode}

    @property
    def email(self) -> str:
        """user.email; the UserEmail rows come from addresses()."""
        return {
            NO_ADDRESS: "",
            TEMPFAIL: f"{self.username}@{TEMPFAIL_DOMAIN}",
            BOUNCE: f"{self.username}@{BOUNCE_DOMAIN}",
            LATER_BOUNCE: f"{self.username}@{LATER_BOUNCE_DOMAIN}",
        }.get(self.kind, f"{self.username}@{DOMAIN}")

    def addresses(self) -> dict[str, bool]:
        """{email: is_primary} of the UserEmail rows this user should have."""
        if self.kind == SEVERAL:
            return {
                f"{self.username}@{DOMAIN}": False,
                f"{self.username}@mail.{DOMAIN}": True,
                f"{self.username}.old@{DOMAIN}": False,
            }
        if self.kind == BOUNCE:  # the bounce is the primary notification address
            return {f"{self.username}@{BOUNCE_DOMAIN}": True}
        return {}


def password_file() -> Path:
    return Path(settings.VAR_DIR) / PASSWORD_FILE


def kept_password() -> str:
    try:
        return password_file().read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        return ""


def keep_password(password: str) -> None:
    """Owner-only file, replaced in one step so a reader never sees half of it."""
    path = password_file()
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(password)
    os.replace(partial, path)


def staff_password(given: str | None) -> str:
    """--password, else MESSAGING_DEMO_PASSWORD, else the one kept from an earlier run, else a
    new random one."""
    return given or os.environ.get(PASSWORD_ENV) or kept_password() or secrets.token_urlsafe(12)


def ascii_slug(text: str) -> str:
    text = text.lower().replace("ø", "o").replace("æ", "ae").replace("å", "a")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in text if c.isalnum())


def plan_users(count: int) -> list[UserSpec]:
    """The same list of users for the same count, on every run."""
    rng = random.Random(SEED)
    specs: list[UserSpec] = []
    taken: set[str] = {STAFF_USERNAME}
    for _ in range(count):
        norwegian = rng.random() < 0.65
        first = rng.choice(NORWEGIAN_FIRST if norwegian else ENGLISH_FIRST)
        last = rng.choice(NORWEGIAN_LAST if norwegian else ENGLISH_LAST)
        roll = rng.random()
        if norwegian:
            language = "nb" if roll < 0.8 else ("en" if roll < 0.95 else "")
        else:
            language = "en" if roll < 0.85 else ("nb" if roll < 0.95 else "")
        base = f"{ascii_slug(first)}.{ascii_slug(last)}"
        username, n = base, 1
        while username in taken:
            n += 1
            username = f"{base}{n}"
        taken.add(username)
        specs.append(UserSpec(username, first, last, language))

    for i, spec in enumerate(specs):
        if i < EXAMINERS:
            spec.groups.add("INF1000 examiners")
            if i < 3:
                spec.groups.add("Staff")
            continue
        if i < count * 0.7:
            spec.groups.add("INF1000 students")
        if i >= count * 0.5:
            spec.groups.add("MAT1100 students")

    # Special addresses among INF1000 students, so sending the welcome draft shows them.
    candidates = [s for s in specs if "INF1000 students" in s.groups]
    needed = sum(SPECIAL_ADDRESSES.values())
    chosen = rng.sample(candidates, min(needed, len(candidates)))
    for kind, how_many in SPECIAL_ADDRESSES.items():
        for spec in chosen[:how_many]:
            spec.kind = kind
        chosen = chosen[how_many:]

    # Some students chose digests or turned a type off, so the compose summary and the status
    # page show what preferences do (a generator of its own: the users above stay the same).
    preference_rng = random.Random(SEED + 1)
    for spec in specs[EXAMINERS:]:
        for context_type, (mode, share) in DEMO_PREFERENCES.items():
            if preference_rng.random() < share:
                spec.preferences[context_type] = mode
    return specs


class Command(BaseCommand):
    help = (
        "Create or refresh demo data: a staff superuser 'staff' (a random password chosen once and "
        f"kept in VAR_DIR/{PASSWORD_FILE}; --password or {PASSWORD_ENV} sets it), about 200 users "
        "with English/Norwegian names and languages, the groups "
        f"{', '.join(GROUPS)}, users without any address, with several addresses, and with "
        f"addresses at {TEMPFAIL_DOMAIN} (the dev mail sink answers 451), {BOUNCE_DOMAIN} (550) and "
        f"{LATER_BOUNCE_DOMAIN} (accepted, bounced a minute later), "
        "and sample draft messages. Running it again does not duplicate anything."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=200, help="Number of demo users (default: 200).")
        parser.add_argument(
            "--password",
            help=(
                f"Password for the staff user, kept for later runs (default: ${PASSWORD_ENV}, else the "
                "one kept from an earlier run, else a new random one)."
            ),
        )

    def handle(self, *args, users: int, password: str | None, **options):
        password = staff_password(password)
        specs = plan_users(users)
        with transaction.atomic():
            staff = self.sync_staff(password)
            created, updated = self.sync_users(specs)
            groups = self.sync_groups(specs, staff)
            drafts = self.sync_drafts(specs, groups, staff)
            self.sync_templates(staff)
        if kept_password() != password:
            keep_password(password)
        counts = {kind: sum(s.kind == kind for s in specs) for kind in SPECIAL_ADDRESSES}
        languages = {code or "default": sum(s.language == code for s in specs) for code in ("en", "nb", "")}
        self.stdout.write(
            f"Demo data: {len(specs)} users ({created} created, {updated} updated; "
            + ", ".join(f"{code} {n}" for code, n in languages.items())
            + f"), {len(groups)} groups, {counts[NO_ADDRESS]} without any address, "
            f"{counts[SEVERAL]} with several, {counts[TEMPFAIL]} at {TEMPFAIL_DOMAIN} (451), "
            f"{counts[BOUNCE]} at {BOUNCE_DOMAIN} (550), {counts[LATER_BOUNCE]} at {LATER_BOUNCE_DOMAIN} "
            f"(bounced after sending); {len(SAMPLES)} sample drafts ({drafts} created), "
            f"{len(TEMPLATES)} message template(s)."
        )
        self.stdout.write(
            self.style.SUCCESS(f"Sign in at http://127.0.0.1:8000/ as {STAFF_USERNAME} / {password}")
        )
        self.stdout.write(
            f"(The password is kept in {password_file()} for the next run; set {PASSWORD_ENV} or "
            "pass --password to choose another.)"
        )

    def sync_staff(self, password: str):
        User = get_user_model()
        staff, _created = User.objects.get_or_create(**{User.USERNAME_FIELD: STAFF_USERNAME})
        staff.first_name, staff.last_name = "Sam", "Staff"
        staff.email = f"{STAFF_USERNAME}@{DOMAIN}"
        staff.is_staff = staff.is_superuser = staff.is_active = True
        if not staff.check_password(password):
            # Only when it differs: a new hash would sign the browser out on every `make run`.
            staff.set_password(password)
        staff.save()
        MessagingProfile.objects.update_or_create(user=staff, defaults={"languagecode": "en"})
        return staff

    def sync_users(self, specs: list[UserSpec]) -> tuple[int, int]:
        User = get_user_model()
        usernames = [s.username for s in specs]
        existing = {u.get_username(): u for u in User.objects.filter(username__in=usernames)}
        to_create, to_update = [], []
        for spec in specs:
            values = {
                "first_name": spec.first_name,
                "last_name": spec.last_name,
                "email": spec.email,
                "is_active": True,
            }
            user = existing.get(spec.username)
            if user is None:
                user = User(username=spec.username, **values)
                user.set_unusable_password()  # demo users never sign in
                to_create.append(user)
            elif any(getattr(user, name) != value for name, value in values.items()):
                for name, value in values.items():
                    setattr(user, name, value)
                to_update.append(user)
        User.objects.bulk_create(to_create)
        User.objects.bulk_update(to_update, ["first_name", "last_name", "email", "is_active"])
        users = {u.get_username(): u for u in User.objects.filter(username__in=usernames)}
        self.users_by_username = users
        self.sync_profiles(specs, users)
        self.sync_addresses(specs, users)
        self.sync_preferences(specs, users)
        return len(to_create), len(to_update)

    def sync_profiles(self, specs, users) -> None:
        profiles = {p.user_id: p for p in MessagingProfile.objects.filter(user__in=users.values())}
        new, changed = [], []
        for spec in specs:
            user = users[spec.username]
            profile = profiles.get(user.pk)
            if profile is None:
                new.append(MessagingProfile(user=user, languagecode=spec.language))
            elif profile.languagecode != spec.language:
                profile.languagecode = spec.language
                changed.append(profile)
        MessagingProfile.objects.bulk_create(new)
        MessagingProfile.objects.bulk_update(changed, ["languagecode"])

    def sync_preferences(self, specs, users) -> None:
        wanted = {
            (users[spec.username].pk, context_type): mode
            for spec in specs
            for context_type, mode in spec.preferences.items()
        }
        rows = NotificationPreference.objects.filter(user__in=[users[spec.username].pk for spec in specs])
        current = {
            (user_id, type_): (pk, mode)
            for pk, user_id, type_, mode in rows.values_list("pk", "user_id", "context_type", "mode")
        }
        stale = {key: pk for key, (pk, mode) in current.items() if wanted.get(key) != mode}
        NotificationPreference.objects.filter(pk__in=stale.values()).delete()
        NotificationPreference.objects.bulk_create(
            NotificationPreference(user_id=user_id, context_type=context_type, mode=mode)
            for (user_id, context_type), mode in wanted.items()
            if (user_id, context_type) not in current or (user_id, context_type) in stale
        )

    def sync_addresses(self, specs, users) -> None:
        current: dict[int, dict[str, UserEmail]] = {}
        for row in UserEmail.objects.filter(user__in=users.values()):
            current.setdefault(row.user_id, {})[row.email] = row
        new, changed, stale = [], [], []
        for spec in specs:
            user = users[spec.username]
            have = current.get(user.pk, {})
            want = spec.addresses()
            stale += [row.pk for email, row in have.items() if email not in want]
            for email, primary in want.items():
                row = have.get(email)
                if row is None:
                    new.append(UserEmail(user=user, email=email, is_primary=primary))
                elif row.is_primary != primary or not row.use_for_notifications:
                    row.is_primary, row.use_for_notifications = primary, True
                    changed.append(row)
        UserEmail.objects.filter(pk__in=stale).delete()
        UserEmail.objects.bulk_create(new)
        UserEmail.objects.bulk_update(changed, ["is_primary", "use_for_notifications"])

    def sync_groups(self, specs, staff) -> dict[str, Group]:
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in GROUPS}
        users = self.users_by_username
        for name, group in groups.items():
            members = [users[s.username] for s in specs if name in s.groups]
            if name == "Staff":
                members.append(staff)
            group.user_set.add(*members)  # adds only the missing ones
        return groups

    def sync_templates(self, staff) -> None:
        for spec in TEMPLATES:
            exists = MessageTemplate.objects.filter(name=spec["name"], context_type=spec["context_type"])
            if not exists.exists():  # staff may have edited it: leave it alone
                template = MessageTemplate(
                    name=spec["name"], context_type=spec["context_type"], composed_content=spec["content"]
                )
                message_templates.save_template(template, actor=staff)

    def sync_drafts(self, specs, groups, staff) -> int:
        users = self.users_by_username
        failures = [
            users[s.username].pk for s in specs if s.kind in (NO_ADDRESS, TEMPFAIL, BOUNCE, LATER_BOUNCE)
        ]
        created = 0
        for key, sample in SAMPLES.items():
            if Message.objects.drafts().filter(metadata__demo_sample=key).exists():
                continue  # staff may have edited it: leave it alone
            message = Message(
                context_type=sample["context_type"],
                composed_content=sample["content"],
                metadata={"demo_sample": key},
                virtual_message_receivers={
                    "chosen_user_ids": [*failures, staff.pk] if sample["chosen"] == "failures" else [],
                    "group_ids": [groups[name].pk for name in sample["groups"]],
                },
            )
            composing.save_draft(message, actor=staff)
            created += 1
        return created
