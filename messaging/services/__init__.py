"""The state machine of messages and receivers. Every status transition lives here."""
