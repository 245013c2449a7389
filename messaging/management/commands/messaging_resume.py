from messaging.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = "Resume paused messages: delivery continues with the receivers not sent yet."
    action = "resume"
