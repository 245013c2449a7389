from messaging.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = "Cancel messages: receivers not yet handed to the mail server are never sent."
    action = "cancel"
