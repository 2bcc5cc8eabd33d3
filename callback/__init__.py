"""Queued callback: tickets that keep the caller's place and the dialer that calls back."""
