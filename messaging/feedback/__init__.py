"""Delivery feedback from mail servers and providers."""
