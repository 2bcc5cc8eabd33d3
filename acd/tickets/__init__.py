"""Firstline's ticket store: tickets, their lifecycle and history, customers, SLA deadlines.

The lifecycle (`status`) and deadlines (`deadline`) are pure; `store` and `migrate` do the
database work on SQLite (embedded default) or PostgreSQL with the same code. Nothing in
this package reads the clock or the configuration files.
"""

from acd.tickets.alerts import (
    ALERT_ACTOR,
    SEVERITIES,
    Alert,
    AlertRecord,
    AlertStore,
    AlertTicket,
    alert_priority,
)
from acd.tickets.callbacks import (
    ATTEMPT_OUTCOMES,
    Callback,
    CallbackNotFound,
    CallbackRequest,
    CallbackStore,
    LeaseLost,
    PendingSummary,
)
from acd.tickets.calls import CallChange, CallJournal, CallRecord, CallStore
from acd.tickets.deadline import Coverage, deadline_from_config, resolve_deadline
from acd.tickets.engine import create_engine_for
from acd.tickets.migrate import alembic_config, migrate
from acd.tickets.outbox import Notification, NotificationRecord, TicketOutbox
from acd.tickets.status import (
    OPEN_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    TicketStatus,
    allowed_targets,
    check_transition,
)
from acd.tickets.store import (
    Customer,
    CustomerNotFound,
    HistoryEntry,
    InvalidValue,
    PhoneNumberTaken,
    Ticket,
    TicketNotFound,
    TicketStore,
    TicketStoreError,
    is_e164,
)

__all__ = [
    "ALERT_ACTOR",
    "ATTEMPT_OUTCOMES",
    "OPEN_STATUSES",
    "SEVERITIES",
    "TRANSITIONS",
    "Alert",
    "AlertRecord",
    "AlertStore",
    "AlertTicket",
    "CallChange",
    "CallJournal",
    "CallRecord",
    "CallStore",
    "Callback",
    "CallbackNotFound",
    "CallbackRequest",
    "CallbackStore",
    "Coverage",
    "Customer",
    "CustomerNotFound",
    "HistoryEntry",
    "IllegalTransition",
    "InvalidValue",
    "LeaseLost",
    "Notification",
    "NotificationRecord",
    "PendingSummary",
    "PhoneNumberTaken",
    "Ticket",
    "TicketNotFound",
    "TicketOutbox",
    "TicketStatus",
    "TicketStore",
    "TicketStoreError",
    "alembic_config",
    "alert_priority",
    "allowed_targets",
    "check_transition",
    "create_engine_for",
    "deadline_from_config",
    "is_e164",
    "migrate",
    "resolve_deadline",
]
