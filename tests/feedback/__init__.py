"""Delivery feedback: bounces, webhooks, suppressions."""
