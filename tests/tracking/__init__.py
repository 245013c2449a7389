"""Watching a send: the status page, receivers, people, exports, charts."""
