"""Notifier blocks: where certfleet tells people what happened (blocks.notifiers.slack)."""
