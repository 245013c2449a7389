"""The state machine: every status change of a Message or a MessageReceiver, and every change of
who owns a receiver, happens in this package and nowhere else (tests/engine/test_state_machine.py
checks that no other module writes a status, an owner or a lease). One module per kind of move
(messages, ownership, results, digests, outcomes); every transition is importable from here.

Each transition is one conditional UPDATE (`WHERE status IN <expected> [AND claimed_by = <me>]`)
whose row count says whether it happened, so two processes racing for the same change cannot
both win. Message transitions that also change `status_data` read it under a row lock
(SELECT ... FOR UPDATE; SQLite's IMMEDIATE transactions serialise writers anyway), so an entry
written by someone else is never lost.

Message:
    draft ─queue→ queued ─start_preparing→ preparing ─finish_preparing→ sending
        (preparing holds a lease that each committed batch of receivers renews: renew_preparation;
        once it runs out, take_over_preparation hands it to the sweeper)
    preparing ─start_streaming→ sending, still preparing (a staff-composed send: its first
        receivers are delivered while the rest are prepared under the same lease; the status
        stays sending|blocked|paused, never sent/error, until ─finish_streaming→ prepared, or
        ─fail_streaming→ prepared in part: it ends error)
    draft ─schedule→ scheduled ─(re)schedule→ scheduled ─unschedule→ draft   (staff-composed)
    scheduled ─queue_scheduled→ queued            (its time came; prepared now)
    preparing ─finish_preparing→ scheduled ─start_scheduled_delivery→ sending   (API send_at)
    sending|blocked ─pause→ paused ─resume→ sending
    scheduled|queued|sending|blocked|paused ─cancel→ cancelled    (receivers not yet handed over,
    scheduled|queued|sending|blocked|paused|error ─expire→ expired  or held and not yet in a
                                                                    digest: cancelled, with the reason)
    queued ─unqueue→ draft                      (the task queue could not take it)
    draft|queued ─start_preparing→ preparing    (prepare_and_send from code: draft)
    preparing ─requeue_preparation→ queued      (its worker died; staff-composed: prepared again,
                                                keeping the receivers already committed)
    preparing ─fail_preparation→ error           (preparing raised, nothing to send, worker died;
                                                its receivers discarded first)
    queued ─fail→ error                          (invalid recipients)
    preparing ─discard_digest_assembly→ (deleted) (a digest whose assembler died; items wait)
    sending ─block→ blocked ─unblock→ sending   (the mail server refuses every delivery, or the
                                                mailer's own sending limit is used up a while)
    DELIVERING ─roll_up→ from the receivers' counts (cancelled and expired are kept)

Every message transition sends `messaging.signals.message_status_changed` after it happened.

Receiver (status not_sent → sent | failed | error | cancelled; ownership via claimed_by + lease):
    (new) ─initial_status→ not_sent, or skipped (final: the user turned the type off), or held
    held and due ─attach_due_to_digest→ held in a digest (digest = its user's receiver of the
                                         digest being assembled, not yet sent)
    held in a digest ─settle_digests→ sent once the digest was sent; error if it failed for good;
                                      back to waiting if it was cancelled
    held ─expire_held→ cancelled (expired) when its message's expiry passed first
    not_sent ─claim_batch→ owned by a worker until its lease runs out (renew_leases extends it;
                           one its dead owner had in flight is flagged delivery_uncertain)
    owned ─mark_in_flight→ in flight (committed just before the channel gets it; mark_sending_now
                           for a direct send(); unmark when the channel was unavailable)
    in flight ─record_result→ sent | failed | error  (released)
    in flight ─record_uncertain→ not_sent, flagged delivery_uncertain (released)
    owned ─release→ not_sent (unowned; one in flight stays marked, flagged by its next claimer)
    owned ─defer→ not_sent, unowned and unclaimable until its domain's sending limit frees
    failed|error|sent but undelivered ─reset_for_resend→ not_sent (delivery outcome cleared)
    any ─record_outcome→ delivery outcome from feedback (the newest event wins; a complaint stays)
    not_sent|failed awaiting retry|held ─cancel/expire→ cancelled  (one in flight is left to its
                                                   live owner; a dead owner's is cancelled flagged,
                                                   then or by settle_stopped once its lease ends)
"""

from messaging.engine.transitions.digests import (
    attach_due_to_digest,
    expire_held,
    initial_status,
    settle_digests,
)
from messaging.engine.transitions.messages import (
    block,
    cancel,
    discard_digest_assembly,
    expire,
    fail,
    fail_preparation,
    fail_streaming,
    finish_preparing,
    finish_streaming,
    mark_reported,
    pause,
    preparation_lease_ran_out,
    queue,
    queue_scheduled,
    recount,
    renew_preparation,
    requeue_preparation,
    resume,
    roll_up,
    schedule,
    settle_stopped,
    start_preparing,
    start_scheduled_delivery,
    start_streaming,
    take_over_preparation,
    unblock,
    unqueue,
    unschedule,
)
from messaging.engine.transitions.outcomes import (
    record_outcome,
)
from messaging.engine.transitions.ownership import (
    CLAIM_BATCH_SIZE,
    Claim,
    claim_batch,
    claim_one,
    defer,
    flag_uncertain,
    lease_seconds,
    mark_in_flight,
    mark_sending_now,
    release,
    renew_leases,
    unmark,
)
from messaging.engine.transitions.results import (
    record_result,
    record_uncertain,
    reset_for_resend,
    result_fields,
)

__all__ = [
    "CLAIM_BATCH_SIZE",
    "Claim",
    "attach_due_to_digest",
    "block",
    "cancel",
    "claim_batch",
    "claim_one",
    "defer",
    "discard_digest_assembly",
    "expire",
    "expire_held",
    "fail",
    "fail_preparation",
    "fail_streaming",
    "finish_preparing",
    "finish_streaming",
    "flag_uncertain",
    "initial_status",
    "lease_seconds",
    "mark_in_flight",
    "mark_reported",
    "mark_sending_now",
    "pause",
    "preparation_lease_ran_out",
    "queue",
    "queue_scheduled",
    "record_outcome",
    "record_result",
    "record_uncertain",
    "recount",
    "release",
    "renew_leases",
    "renew_preparation",
    "requeue_preparation",
    "reset_for_resend",
    "result_fields",
    "resume",
    "roll_up",
    "schedule",
    "settle_digests",
    "settle_stopped",
    "start_preparing",
    "start_scheduled_delivery",
    "start_streaming",
    "take_over_preparation",
    "unblock",
    "unmark",
    "unqueue",
    "unschedule",
]
