"""What each context type is for, in one line: shown under the context type on the compose and
template pages (and kept here only, so both say the same)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from messaging.models import Message

ContextType = Message.ContextType

EXPLANATIONS = {
    ContextType.OTHER: _("Anything that fits none of the other types."),
    ContextType.COMMENT: _("A teacher or examiner commented on a student's work."),
    ContextType.DEADLINE_MOVED: _("A deadline was moved: say what it applies to and the new date."),
    ContextType.FEEDBACK: _("Feedback or a grade on a delivery was published."),
    ContextType.FEEDBACK_UPDATED: _("Feedback or a grade that was already published has changed."),
    ContextType.SENDING_REPORT: _(
        "Sent by the system to the sender of a message whose sending had failures; not for staff messages."
    ),
}
