from messaging.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = "Pause sending: no receiver is handed to the mail server until the message is resumed."
    action = "pause"
