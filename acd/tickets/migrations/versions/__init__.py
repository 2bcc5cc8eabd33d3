"""Alembic revision scripts of the ticket store, oldest first; Alembic loads them by path."""
