"""Alembic migrations of the ticket store (env.py and versions/); run them with `migrate`.

A package only so that the scripts ship with Firstline; nothing here is imported by code.
"""
