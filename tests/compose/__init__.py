"""Composing: the compose form and pages, templates, attachments, recipients, test sends."""
