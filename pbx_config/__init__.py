"""Renders the Asterisk configuration from Firstline's config model alone (no I/O but writing)."""
