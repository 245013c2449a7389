from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from messaging.preferences import link_revocation

SOURCE = "manage.py messaging_revoke_links"


class Command(BaseCommand):
    help = (
        "Revoke every signed link (email settings, unsubscribe, read in full) in the emails sent "
        "so far to each user named by username or address; audited. Every name is checked first: "
        "one that matches nobody, or more than one user, changes nothing for anyone."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="+", metavar="USERNAME_OR_EMAIL")

    def handle(self, *args, names, **options):
        users = [self._user(name) for name in dict.fromkeys(names)]
        link_revocation.revoke_links_of_all(users, actor=None, source=SOURCE)
        for user in users:
            self.stdout.write(f"Revoked the email links of {user.get_username()} (user {user.pk}).")

    def _user(self, name: str):
        """The user with this username, else the one user with this address."""
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: name}).first()
        if user is not None:
            return user
        matches = list(User.objects.filter(**{f"{User.get_email_field_name()}__iexact": name})[:2])
        if not matches:
            raise CommandError(f"No user with the username or address {name!r}; nothing was revoked.")
        if len(matches) > 1:
            raise CommandError(f"More than one user has the address {name!r}; nothing was revoked.")
        return matches[0]
