"""Clients: the live terminal view and helpers for bots."""
