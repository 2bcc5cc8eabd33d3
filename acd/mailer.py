"""The SMTP adapter: e-mails customers what the ticket outbox holds, with retries.

`Mailer` polls an `Outbox` (the store's `TicketOutbox`, wired in by the daemon; this module
does not import the store), renders each claimed notification with the configured
per-language texts (`render_message`), sends it with aiosmtplib and records the outcome:
sent, retried later with exponential backoff, failed for good (permanent SMTP refusal or
out of attempts) or skipped (no customer address). It never raises out of `run` and never
decides what to notify: the store writes an outbox row with every change it reports.
"""

# Why failures are sorted into "retry" and "give up": a 4xx reply, a refused or dropped
# connection, a timeout or a login problem is the server's or the network's state and may
# pass, so the message waits (retry_after, doubled each time, at most retry_max) until
# max_attempts. A 5xx refusal of the recipient or of the message will be the same next
# time: retrying only delays the admin's view of it. A refused sender is a configuration
# problem the admin can fix, so it is retried too.
#
# Why a pass has a time budget: claimed messages are leased to this mailer (see
# acd.tickets.outbox); one that is still unsent when the lease runs out may be claimed and
# sent by the other daemon too. Every SMTP step has `timeout`, and the pass stops starting
# new messages after `timeout * batch` seconds, so the lease (`_lease`) covers the longest
# possible pass; what was left is retried at once by the next pass.
#
# Why subjects and names are flattened to one line: text from the ticket (description,
# customer name) must never become a header of its own. EmailMessage refuses CR/LF in a
# header value, which would make the message unsendable; flattening makes it harmless.

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
import ssl
import string
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Final, Protocol

import aiosmtplib
import structlog

from acd.config.model import Mail, MailTexts

__all__ = ["Mailer", "Outbox", "OutboxMessage", "PassResult", "render_message"]

_SUBJECT_MAX: Final = 250
_NAME_MAX: Final = 100
# Line breaks of every kind (\r \n \v \f \x1c-\x1e \x85 \u2028 \u2029), other controls,
# and runs of blanks: a header value is one line of plain spaces.
_NOT_ONE_LINE: Final = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029\s]+")
_ADDRESS: Final = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+$")
_FALLBACK_LANGUAGE: Final = "en"


class OutboxMessage(Protocol):
    """A claimed notification (acd.tickets.outbox.Notification has these fields)."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def ticket_number(self) -> str: ...
    @property
    def ticket_created_at(self) -> dt.datetime: ...
    @property
    def priority(self) -> str: ...
    @property
    def deadline(self) -> dt.datetime: ...
    @property
    def category(self) -> str | None: ...
    @property
    def description(self) -> str: ...
    @property
    def recipient(self) -> str | None: ...
    @property
    def customer_name(self) -> str | None: ...
    @property
    def customer_company(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...


class Outbox(Protocol):
    """Where notifications wait (acd.tickets.outbox.TicketOutbox)."""

    async def due_notifications(
        self, now: dt.datetime, limit: int, *, lease: dt.timedelta
    ) -> Sequence[OutboxMessage]: ...

    async def mark_sent(self, notification_id: int, now: dt.datetime) -> bool: ...

    async def mark_failed(
        self,
        notification_id: int,
        now: dt.datetime,
        error: str,
        retry_at: dt.datetime | None,
    ) -> bool: ...

    async def mark_skipped(self, notification_id: int, now: dt.datetime, reason: str) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass over the outbox did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0


class _UndeliverableError(ValueError):
    """The message cannot be built (e.g. a malformed customer address): retrying won't help."""


def render_message(
    message: OutboxMessage,
    config: Mail,
    *,
    now: dt.datetime,
    hotline_languages: Sequence[str] = (),
) -> EmailMessage:
    """The e-mail for `message`, in the customer's language (else the hotline's first, else en).

    Raises ValueError if the recipient address is unusable.
    """
    recipient = message.recipient
    if recipient is None or not _ADDRESS.match(recipient):
        raise _UndeliverableError(f"unusable recipient address {recipient!r}")
    texts = _texts(config, message.language, hotline_languages)
    values = _values(message, texts, config)
    if message.kind == "created":
        subject, body = texts.created_subject, texts.created_body
    else:
        subject, body = texts.status_subject, texts.status_body
    domain = config.from_address.rpartition("@")[2]
    thread = f"<ticket.{message.ticket_number}.{int(message.ticket_created_at.timestamp())}"
    email = EmailMessage()
    try:
        email["From"] = Address(display_name=config.from_name or "", addr_spec=config.from_address)
        name = _one_line(message.customer_name or "", _NAME_MAX)
        email["To"] = Address(display_name=name, addr_spec=recipient)
    except (ValueError, IndexError) as error:  # the address parser raises both
        raise _UndeliverableError(f"unusable address: {error}") from None
    if config.reply_to is not None:
        email["Reply-To"] = config.reply_to
    email["Subject"] = _one_line(string.Template(subject).substitute(values), _SUBJECT_MAX)
    email["Date"] = format_datetime(now.astimezone(dt.UTC))
    if message.kind == "created":
        email["Message-ID"] = f"{thread}@{domain}>"
    else:
        email["Message-ID"] = f"{thread}.n{message.id}@{domain}>"
        email["In-Reply-To"] = f"{thread}@{domain}>"
        email["References"] = f"{thread}@{domain}>"
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(
        string.Template(body.replace("\r\n", "\n")).substitute(values), cte="quoted-printable"
    )
    return email


class Mailer:
    """Sends the outbox's due notifications over SMTP, every `poll_interval` seconds.

    `hotline_languages` is the hotline's language list (its first is the fallback text).
    `clock` gives aware datetimes (default: now in UTC); `tls_context` replaces the system's
    certificate checks (e.g. a private CA; default: the system's CAs). Reveals the SMTP
    password at construction (`SecretUnavailableError` if it cannot be read).
    """

    def __init__(
        self,
        outbox: Outbox,
        config: Mail,
        *,
        hotline_languages: Sequence[str] = (),
        poll_interval: float = 5.0,
        batch: int = 10,
        clock: Callable[[], dt.datetime] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if poll_interval <= 0 or batch < 1:
            raise ValueError("poll_interval must be positive and batch at least 1")
        self._outbox = outbox
        self._config = config
        self._languages = tuple(hotline_languages)
        self._interval = poll_interval
        self._batch = batch
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._tls_context = tls_context
        self._password = None if config.password is None else config.password.reveal()
        self._budget = float(config.timeout * batch)
        self._lease = dt.timedelta(seconds=config.timeout * (batch + 10) + 60)
        self._log = structlog.get_logger("acd.mailer")
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Send due notifications until `stop()` (or cancelled); errors are logged, never
        raised. After `stop()` it returns once the pass under way is done, so no database
        transaction is cut off halfway (asyncpg does not always survive a cancelled query)."""
        self._log.info(
            "mailer.started",
            server=f"{self._config.host}:{self._config.port}",
            security=self._config.security,
        )
        while not self._stopping.is_set():
            try:
                result = await self.send_due(self._clock())
            except Exception as error:
                self._log.error("mailer.pass_failed", error=repr(error))
                result = PassResult()
            # A full batch that went well means a backlog: go on at once (after letting
            # others run); otherwise wait for new messages or for the server to recover.
            backlog = result.claimed >= self._batch and result.retried == 0
            if backlog:
                await asyncio.sleep(0)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)
        self._log.info("mailer.stopped")

    def stop(self) -> None:
        """Ask `run()` to return after the pass under way."""
        self._stopping.set()

    async def send_due(self, now: dt.datetime) -> PassResult:
        """One pass: claim up to `batch` due notifications and send them; the outcome counts.

        Errors of the outbox itself (its database) propagate; SMTP errors never do.
        """
        claimed = await self._outbox.due_notifications(now, self._batch, lease=self._lease)
        counts = {"sent": 0, "retried": 0, "failed": 0, "skipped": 0}
        ready: list[tuple[OutboxMessage, EmailMessage]] = []
        for message in claimed:
            if message.attempts > self._config.max_attempts:
                # Claimed again and again without an outcome (a mailer died sending it).
                error = f"no outcome after {message.attempts - 1} attempts"
                await self._fail(message, now, error, counts, permanent=True)
                continue
            if message.recipient is None:
                await self._skip(message, now, "the customer has no e-mail address", counts)
                continue
            try:
                email = render_message(
                    message, self._config, now=now, hotline_languages=self._languages
                )
            except _UndeliverableError as error:
                await self._fail(message, now, str(error), counts, permanent=True)
            except Exception as error:  # a message that cannot be built never will be
                error_text = f"cannot build the message: {error!r}"
                await self._fail(message, now, error_text, counts, permanent=True)
            else:
                ready.append((message, email))
        if ready:
            await self._deliver(ready, now, counts)
        return PassResult(claimed=len(claimed), **counts)

    async def _deliver(
        self,
        ready: list[tuple[OutboxMessage, EmailMessage]],
        now: dt.datetime,
        counts: dict[str, int],
    ) -> None:
        config = self._config
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=self._password,
            timeout=config.timeout,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            for message, _ in ready:
                await self._fail(message, now, f"connecting to {_server(config)}: {error}", counts)
            return
        try:
            await self._send_all(smtp, ready, now, counts)
        except BaseException:
            smtp.close()  # cancelled (the daemon stops): drop the link at once
            raise
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()

    async def _send_all(
        self,
        smtp: aiosmtplib.SMTP,
        ready: list[tuple[OutboxMessage, EmailMessage]],
        now: dt.datetime,
        counts: dict[str, int],
    ) -> None:
        started = time.monotonic()
        for index, (message, email) in enumerate(ready):
            if time.monotonic() - started > self._budget:
                for late, _ in ready[index:]:
                    await self._leave_over(late, now, counts)
                return
            await self._send_one(smtp, message, email, now, counts)

    async def _send_one(
        self,
        smtp: aiosmtplib.SMTP,
        message: OutboxMessage,
        email: EmailMessage,
        now: dt.datetime,
        counts: dict[str, int],
    ) -> None:
        try:
            await smtp.send_message(email)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            await self._fail(message, now, f"recipient refused: {error}", counts, permanent)
        except aiosmtplib.SMTPSenderRefused as error:
            await self._fail(message, now, f"sender refused: {error}", counts)
        except aiosmtplib.SMTPResponseException as error:
            permanent = 500 <= error.code < 600
            await self._fail(message, now, f"refused: {error}", counts, permanent)
        except (aiosmtplib.SMTPException, OSError) as error:
            await self._fail(message, now, f"sending failed: {error}", counts)
        else:
            if await self._mark("sent", self._outbox.mark_sent(message.id, now), message):
                counts["sent"] += 1
                self._log.info(
                    "mailer.sent",
                    notification=message.id,
                    ticket=message.ticket_number,
                    kind=message.kind,
                    status=message.status,
                    attempts=message.attempts,
                )

    async def _fail(
        self,
        message: OutboxMessage,
        now: dt.datetime,
        error: str,
        counts: dict[str, int],
        permanent: bool = False,
    ) -> None:
        config = self._config
        if permanent or message.attempts >= config.max_attempts:
            marked = self._outbox.mark_failed(message.id, now, error, None)
            if await self._mark("failed", marked, message):
                counts["failed"] += 1
                self._log.error(
                    "mailer.failed",
                    notification=message.id,
                    ticket=message.ticket_number,
                    attempts=message.attempts,
                    error=error,
                )
            return
        wait = min(config.retry_after * 2 ** max(message.attempts - 1, 0), config.retry_max)
        retry_at = now + dt.timedelta(seconds=wait)
        marked = self._outbox.mark_failed(message.id, now, error, retry_at)
        if await self._mark("retry", marked, message):
            counts["retried"] += 1
            self._log.warning(
                "mailer.retry",
                notification=message.id,
                ticket=message.ticket_number,
                attempts=message.attempts,
                retry_at=retry_at.isoformat(),
                error=error,
            )

    async def _leave_over(
        self, message: OutboxMessage, now: dt.datetime, counts: dict[str, int]
    ) -> None:
        # Not tried at all: due again at once, for the next pass (or the other daemon).
        error = "left over: the pass ran out of time"
        if await self._mark(
            "retry", self._outbox.mark_failed(message.id, now, error, now), message
        ):
            counts["retried"] += 1
            self._log.warning(
                "mailer.left_over", notification=message.id, ticket=message.ticket_number
            )

    async def _skip(
        self, message: OutboxMessage, now: dt.datetime, reason: str, counts: dict[str, int]
    ) -> None:
        marked = self._outbox.mark_skipped(message.id, now, reason)
        if await self._mark("skipped", marked, message):
            counts["skipped"] += 1
            self._log.info(
                "mailer.skipped",
                notification=message.id,
                ticket=message.ticket_number,
                reason=reason,
            )

    async def _mark(self, outcome: str, marking: Awaitable[bool], message: OutboxMessage) -> bool:
        # The message is out (or given up) whatever the database says now: log, go on. An
        # unmarked message is claimed again when its lease runs out.
        try:
            marked = await marking
        except Exception as error:
            self._log.error(
                "mailer.mark_failed",
                outcome=outcome,
                notification=message.id,
                ticket=message.ticket_number,
                error=repr(error),
            )
            return False
        if not marked:
            # Our lease ran out and another mailer finished the message first.
            self._log.warning(
                "mailer.mark_lost",
                outcome=outcome,
                notification=message.id,
                ticket=message.ticket_number,
            )
        return marked


def _texts(config: Mail, language: str | None, hotline_languages: Sequence[str]) -> MailTexts:
    for candidate in (language, *hotline_languages[:1], _FALLBACK_LANGUAGE):
        if candidate is not None and candidate in config.templates:
            return config.templates[candidate]
    return next(iter(config.templates.values()))


def _values(message: OutboxMessage, texts: MailTexts, config: Mail) -> dict[str, str]:
    deadline = message.deadline.astimezone(zoneinfo.ZoneInfo(config.timezone))
    return {
        "number": message.ticket_number,
        "status": next(
            (name for status, name in texts.status_names.items() if status == message.status),
            message.status,
        ),
        "name": message.customer_name or message.customer_company or "",
        "company": message.customer_company or "",
        "category": message.category or "",
        "description": message.description.replace("\r\n", "\n"),
        "deadline": deadline.strftime("%Y-%m-%d %H:%M %Z"),
        "priority": message.priority,
    }


def _one_line(text: str, limit: int) -> str:
    flat = _NOT_ONE_LINE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _server(config: Mail) -> str:
    return f"{config.host}:{config.port}"
