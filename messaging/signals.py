"""Signals of the messaging engine."""

from django.dispatch import Signal

# Sent by messaging.engine.transitions after a message's status changed, inside the
# transaction that changed it (use transaction.on_commit for side effects). Arguments:
# message_id, old, new (statuses), status_data (after the change).
message_status_changed = Signal()
