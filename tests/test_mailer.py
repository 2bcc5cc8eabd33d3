"""Customer e-mail: the outbox written with each ticket change, sent to a real SMTP server.

aiosmtpd serves SMTP on a free loopback port in a thread; the store runs on SQLite and
PostgreSQL (the `engine`/`store` fixtures of conftest.py). Time is passed in, so retries and
leases are checked without waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from acd.config import SecretRef
from acd.config.model import Mail
from acd.mailer import Mailer, OutboxMessage, render_message
from acd.tickets import (
    Customer,
    IllegalTransition,
    Notification,
    NotificationRecord,
    TicketOutbox,
    TicketStatus,
    TicketStore,
    create_engine_for,
    migrate,
)
from tests.live.harness import LIVE_CONFIG, run_acd

NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
FROM = "support@firstline.test"


# --- a real SMTP server ----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class Inbox:
    """aiosmtpd handler: keeps every accepted message; refuses the recipients it is told to."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {}
        self.delay = 0.0  # seconds each RCPT and DATA takes

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        await asyncio.sleep(self.delay)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        assert isinstance(envelope.mail_from, str)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, raw))
        return "250 Message accepted"

    def subjects(self) -> list[str]:
        return [str(r.message["Subject"]) for r in self.received]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpServer:
    """A real SMTP server on a loopback port that can be taken down and brought back."""

    def __init__(self, **smtp_kwargs: Any) -> None:
        self.port = _free_port()
        self.inbox = Inbox()
        self._kwargs = smtp_kwargs
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, **self._kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _mail(port: int, **overrides: Any) -> Mail:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": FROM,
        "from_name": "Firstline Support",
        "timeout": 5,
        **overrides,
    }
    return Mail.model_validate(values)


def _mailer(engine: AsyncEngine, config: Mail, **kwargs: Any) -> Mailer:
    kwargs.setdefault("hotline_languages", ("en", "fr"))
    return Mailer(TicketOutbox(engine), config, **kwargs)


async def _customer(
    store: TicketStore,
    customer_id: str = "c1",
    *,
    email_address: str | None = "ann@acme.example",
    language: str | None = "en",
    name: str = "Ann Smith",
) -> None:
    await store.upsert_customer(
        Customer(
            id=customer_id,
            company="ACME",
            name=name,
            email=email_address,
            language=language,
        )
    )


async def _ticket(
    store: TicketStore,
    customer_id: str | None = "c1",
    *,
    description: str = "The plotter cuts off the right margin.",
    now: dt.datetime = NOW,
) -> str:
    ticket = await store.create_ticket(
        now=now,
        actor="ivr",
        priority="normal",
        priority_rank=20,
        deadline=now + dt.timedelta(days=3),
        customer_id=customer_id,
        category="printing",
        description=description,
    )
    return ticket.number


async def _records(engine: AsyncEngine, number: str | None = None) -> list[NotificationRecord]:
    return await TicketOutbox(engine).notifications(number)


async def _wait_for(condition: Callable[[], bool]) -> None:
    # The SMTP server fills the inbox from its own thread: poll, within a bound.
    async with asyncio.timeout(15):
        while not condition():  # noqa: ASYNC110 - set by another thread, not a task
            await asyncio.sleep(0.02)


# --- the outbox is written with the change ---------------------------------------------------


async def test_creation_and_each_status_change_mail_the_customer(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store)
    number = await _ticket(store)
    mailer = _mailer(engine, _mail(smtp.port, timezone="Europe/Paris"))

    first = await mailer.send_due(NOW)
    assert (first.claimed, first.sent) == (1, 1)
    [created] = smtp.inbox.received
    assert created.rcpt_tos == ["ann@acme.example"]
    assert created.mail_from == FROM
    message = created.message
    assert message["Subject"] == f"[{number}] We have received your request"
    assert message["To"] == "Ann Smith <ann@acme.example>"
    assert message["From"] == f"Firstline Support <{FROM}>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    root_id = str(message["Message-ID"])
    assert root_id.startswith(f"<ticket.{number}.")
    assert root_id.endswith("@firstline.test>")
    body = message.get_content()
    assert "Hello Ann Smith," in body
    assert f"opened ticket {number}" in body
    assert "Status: with our support team" in body
    assert "2026-11-26 10:00 CET" in body  # the deadline in the configured zone
    assert "The plotter cuts off the right margin." in body

    await store.set_status(number, "second_level", actor="alice", reason="R&D", now=NOW + SECOND)
    second = await mailer.send_due(NOW + 2 * SECOND)
    assert (second.claimed, second.sent) == (1, 1)
    status = smtp.inbox.received[1].message
    assert status["Subject"] == f"[{number}] Your request is now with our specialists"
    assert status["In-Reply-To"] == root_id
    assert status["References"] == root_id
    assert status["Message-ID"] != root_id

    assert (await mailer.send_due(NOW + dt.timedelta(hours=1))).claimed == 0
    records = await _records(engine, number)
    assert [(r.kind, r.status, r.state, r.attempts) for r in records] == [
        ("created", TicketStatus.FIRST_LEVEL, "sent", 1),
        ("status", TicketStatus.SECOND_LEVEL, "sent", 1),
    ]
    assert [r.sent_at for r in records] == [NOW, NOW + 2 * SECOND]
    assert {r.recipient for r in records} == {"ann@acme.example"}
    assert len(smtp.inbox.received) == 2


async def test_each_change_writes_one_pending_row_in_its_transaction(
    store: TicketStore, engine: AsyncEngine
) -> None:
    number = await _ticket(store, customer_id=None)
    await store.set_status(number, "waiting", actor="alice", reason="logs?", now=NOW + SECOND)
    await store.assign(number, "alice", actor="alice", now=NOW + 2 * SECOND)  # no e-mail
    await store.add_note(number, "called back", actor="alice", now=NOW + 3 * SECOND)
    with pytest.raises(IllegalTransition):
        await store.set_status(number, "dev", actor="alice", reason="no", now=NOW + 4 * SECOND)
    records = await _records(engine, number)
    assert [(r.kind, r.status, r.state, r.attempts) for r in records] == [
        ("created", TicketStatus.FIRST_LEVEL, "pending", 0),
        ("status", TicketStatus.WAITING, "pending", 0),
    ]
    assert [r.next_attempt_at for r in records] == [NOW, NOW + SECOND]
    assert (await store.get(number)).status is TicketStatus.WAITING


async def test_without_an_address_nothing_is_sent_and_the_row_is_skipped(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store, "c2", email_address=None)
    no_address = await _ticket(store, "c2")
    no_customer = await _ticket(store, customer_id=None)
    result = await _mailer(engine, _mail(smtp.port)).send_due(NOW)
    assert (result.claimed, result.skipped, result.sent) == (2, 2, 0)
    assert smtp.inbox.received == []
    for number in (no_address, no_customer):
        [record] = await _records(engine, number)
        assert record.state == "skipped"
        assert record.last_error == "the customer has no e-mail address"
        assert record.sent_at is None


async def test_address_is_read_when_sending_not_when_the_ticket_changed(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store, email_address="old@acme.example")
    await _ticket(store)
    await _customer(store, email_address="new@acme.example")
    await _mailer(engine, _mail(smtp.port)).send_due(NOW)
    assert [r.rcpt_tos for r in smtp.inbox.received] == [["new@acme.example"]]


# --- failures and retries --------------------------------------------------------------------


async def test_server_down_retries_later_then_delivers_everything_once(
    store: TicketStore, engine: AsyncEngine
) -> None:
    server = SmtpServer()  # not started: the port refuses connections
    await _customer(store)
    number = await _ticket(store)
    await store.set_status(number, "waiting", actor="alice", reason="logs?", now=NOW)
    mailer = _mailer(engine, _mail(server.port, retry_after=60, retry_max=600))

    down = await mailer.send_due(NOW)
    # The status e-mail waits behind the ticket's first one, which could not go out.
    assert (down.claimed, down.retried, down.sent) == (1, 1, 0)
    created, status = await _records(engine, number)
    assert (created.state, created.attempts) == ("pending", 1)
    assert created.next_attempt_at == NOW + dt.timedelta(seconds=60)
    assert created.last_error is not None
    assert f"connecting to 127.0.0.1:{server.port}: " in created.last_error
    assert (status.state, status.attempts) == ("pending", 0)

    assert (await mailer.send_due(NOW + 30 * SECOND)).claimed == 0  # not due yet
    again = await mailer.send_due(NOW + 61 * SECOND)
    assert (again.claimed, again.retried) == (1, 1)
    created, _ = await _records(engine, number)
    assert created.next_attempt_at == NOW + 61 * SECOND + dt.timedelta(seconds=120)  # doubled

    server.start()
    try:
        later = NOW + dt.timedelta(minutes=10)
        assert (await mailer.send_due(later)).sent == 1
        assert (await mailer.send_due(later)).sent == 1  # now the status e-mail's turn
        assert (await mailer.send_due(later + dt.timedelta(hours=1))).claimed == 0
        assert server.inbox.subjects() == [
            f"[{number}] We have received your request",
            f"[{number}] Your request is now waiting for your reply",
        ]
        records = await _records(engine, number)
        assert [(r.state, r.attempts) for r in records] == [("sent", 3), ("sent", 1)]
    finally:
        server.stop()


async def test_out_of_attempts_the_message_fails_for_good(
    store: TicketStore, engine: AsyncEngine
) -> None:
    server = SmtpServer()  # never started
    await _customer(store)
    number = await _ticket(store)
    mailer = _mailer(engine, _mail(server.port, max_attempts=2, retry_after=60))
    assert (await mailer.send_due(NOW)).retried == 1
    assert (await mailer.send_due(NOW + 61 * SECOND)).failed == 1
    [record] = await _records(engine, number)
    assert (record.state, record.attempts) == ("failed", 2)
    assert (await mailer.send_due(NOW + dt.timedelta(days=1))).claimed == 0


async def test_permanent_refusal_fails_at_once_temporary_one_retries(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store, "gone", email_address="gone@acme.example")
    await _customer(store, "full", email_address="full@acme.example")
    smtp.inbox.refuse = {
        "gone@acme.example": "550 5.1.1 No such user",
        "full@acme.example": "452 4.2.2 Mailbox full",
    }
    gone = await _ticket(store, "gone")
    full = await _ticket(store, "full")
    result = await _mailer(engine, _mail(smtp.port)).send_due(NOW)
    assert (result.claimed, result.failed, result.retried) == (2, 1, 1)
    [gone_record] = await _records(engine, gone)
    [full_record] = await _records(engine, full)
    assert gone_record.state == "failed"
    assert gone_record.last_error is not None
    assert "550" in gone_record.last_error
    assert full_record.state == "pending"
    assert full_record.last_error is not None
    assert "452" in full_record.last_error
    assert smtp.inbox.received == []


async def test_malformed_customer_address_fails_without_a_connection(
    store: TicketStore, engine: AsyncEngine
) -> None:
    await _customer(store, email_address="ann@acme.example\r\nBcc: x@evil.example")
    number = await _ticket(store)
    server = SmtpServer()  # not started: a connection attempt would be a retry, not this
    result = await _mailer(engine, _mail(server.port)).send_due(NOW)
    assert result.failed == 1
    [record] = await _records(engine, number)
    assert record.state == "failed"
    assert record.last_error is not None
    assert "unusable recipient address" in record.last_error


async def test_a_slow_server_leaves_the_rest_to_the_next_pass(
    sqlite_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    # Each step is within the 1 s timeout, but a message takes 1.8 s: the pass's budget
    # (timeout x batch = 3 s) runs out before the third message, which is not even tried.
    smtp.inbox.delay = 0.9
    store = TicketStore(sqlite_engine)
    await _customer(store)
    numbers = [await _ticket(store) for _ in range(3)]
    mailer = _mailer(sqlite_engine, _mail(smtp.port, timeout=1), batch=3)
    first = await mailer.send_due(NOW)
    assert (first.claimed, first.sent, first.retried) == (3, 2, 1)
    [left] = [r for r in await _records(sqlite_engine) if r.state == "pending"]
    assert left.ticket_number == numbers[2]
    assert left.next_attempt_at == NOW  # due again at once
    assert left.last_error == "left over: the pass ran out of time"
    smtp.inbox.delay = 0
    assert (await mailer.send_due(NOW)).sent == 1
    assert len(smtp.inbox.received) == 3


# --- two daemons, leases ---------------------------------------------------------------------


async def test_two_mailers_on_one_database_send_each_message_once(
    store: TicketStore, engine: AsyncEngine, database_url: str, smtp: SmtpServer
) -> None:
    await _customer(store)
    numbers = [await _ticket(store) for _ in range(12)]
    second_engine = create_engine_for(database_url)
    try:
        config = _mail(smtp.port)
        mailers = [_mailer(engine, config, batch=2), _mailer(second_engine, config, batch=2)]

        async def drain(mailer: Mailer) -> int:
            sent = 0
            while (result := await mailer.send_due(NOW)).claimed:
                sent += result.sent
            return sent

        counts = await asyncio.gather(*(drain(m) for m in mailers))
    finally:
        await second_engine.dispose()
    assert sum(counts) == 12
    subjects = smtp.inbox.subjects()
    assert sorted(subjects) == sorted(f"[{n}] We have received your request" for n in numbers)
    records = await _records(engine)
    assert {(r.state, r.attempts) for r in records} == {("sent", 1)}


async def test_a_claim_is_a_lease_an_unmarked_message_comes_back_after_it(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store)
    number = await _ticket(store)
    outbox = TicketOutbox(engine)
    lease = dt.timedelta(minutes=5)
    [claimed] = await outbox.due_notifications(NOW, 10, lease=lease)  # then the daemon died
    assert isinstance(claimed, Notification)
    assert (claimed.ticket_number, claimed.attempts) == (number, 1)
    assert claimed.recipient == "ann@acme.example"
    assert await outbox.due_notifications(NOW + lease - SECOND, 10, lease=lease) == []
    mailer = _mailer(engine, _mail(smtp.port))
    assert (await mailer.send_due(NOW + lease)).sent == 1
    [record] = await _records(engine, number)
    assert (record.state, record.attempts) == ("sent", 2)
    # The dead daemon's late mark changes nothing: the message is no longer pending.
    assert not await outbox.mark_sent(claimed.id, NOW + lease + SECOND)
    assert not await outbox.mark_failed(claimed.id, NOW, "late", NOW + lease)
    assert len(smtp.inbox.received) == 1


async def test_a_message_that_never_gets_an_outcome_is_given_up(
    sqlite_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    store = TicketStore(sqlite_engine)
    await _customer(store)
    number = await _ticket(store)
    outbox = TicketOutbox(sqlite_engine)
    lease = dt.timedelta(minutes=1)
    for crash in range(2):  # claimed, then the daemon dies before it marks anything
        assert len(await outbox.due_notifications(NOW + crash * lease, 1, lease=lease)) == 1
    mailer = _mailer(sqlite_engine, _mail(smtp.port, max_attempts=2))
    assert (await mailer.send_due(NOW + 2 * lease)).failed == 1
    [record] = await _records(sqlite_engine, number)
    assert (record.state, record.attempts) == ("failed", 3)
    assert record.last_error == "no outcome after 2 attempts"
    assert smtp.inbox.received == []


# --- what the customer reads -----------------------------------------------------------------


async def test_text_from_the_ticket_never_becomes_a_header(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    evil = "Bcc: mallory@evil.example"
    await _customer(store, name=f"Eve\r\n{evil}", email_address="eve@acme.example")
    number = await _ticket(
        store, description=f"Broken\r\n{evil}\n\nInjected\u2028X-Spam: yes\x0bmore"
    )
    config = _mail(smtp.port, templates={"en": {"created_subject": "[$number] $description"}})
    assert (await _mailer(engine, config).send_due(NOW)).sent == 1
    [received] = smtp.inbox.received
    assert received.rcpt_tos == ["eve@acme.example"]
    message = received.message
    assert message["Bcc"] is None
    assert message["X-Spam"] is None
    # Python folds this subject right after "Subject:"; unfolding leaves a leading blank.
    assert message["Subject"].strip() == f"[{number}] Broken {evil} Injected X-Spam: yes more"
    assert message["To"].addresses[0].addr_spec == "eve@acme.example"
    assert message["To"].addresses[0].display_name == f"Eve {evil}"
    headers = received.raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\nbcc:" not in headers
    assert b"\nx-spam:" not in headers
    assert "Injected" in message.get_content()


def test_render_flattens_every_kind_of_line_break() -> None:
    notification = Notification(
        id=7,
        kind="status",
        status=TicketStatus.DONE,
        attempts=1,
        created_at=NOW,
        ticket_number="2026-000001",
        ticket_created_at=NOW,
        priority="high",
        deadline=NOW,
        category="x\ry",
        description="a\rb\nc\r\nd\x85e\u2029f\x1cg\x00h",
        recipient="ann@acme.example",
        customer_name="Ann\nSmith",
        customer_company=None,
        language=None,
    )
    config = _mail(
        25, templates={"en": {"status_subject": "[$number] $description $category $name"}}
    )
    message = render_message(notification, config, now=NOW)
    assert message["Subject"] == "[2026-000001] a b c d e f g h x y Ann Smith"
    assert message["To"] == "Ann Smith <ann@acme.example>"
    long = render_message(_replace(notification, description="word " * 200), config, now=NOW)
    assert len(str(long["Subject"])) <= 250


def _replace(notification: Notification, **changes: Any) -> Notification:
    return dataclasses.replace(notification, **changes)


async def test_each_customer_reads_their_language(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store, "fr", email_address="fr@acme.example", language="fr")
    await _customer(store, "de", email_address="de@acme.example", language="de")
    await _customer(store, "xx", email_address="xx@acme.example", language=None)
    french = await _ticket(store, "fr")
    german = await _ticket(store, "de")
    unknown = await _ticket(store, "xx")
    await store.set_status(french, "waiting", actor="alice", reason="logs", now=NOW)

    # The hotline speaks French first: a German customer (no German texts) reads French.
    french_first = _mailer(engine, _mail(smtp.port), hotline_languages=("fr", "en"))
    while (await french_first.send_due(NOW)).claimed:
        pass
    by_recipient: dict[str, list[EmailMessage]] = {}
    for received in smtp.inbox.received:
        by_recipient.setdefault(received.rcpt_tos[0], []).append(received.message)
    created, waiting = by_recipient["fr@acme.example"]
    assert created["Subject"] == f"[{french}] Nous avons bien reçu votre demande"
    assert "Bonjour Ann Smith," in created.get_content()
    assert "Statut : pris en charge par notre équipe support" in created.get_content()
    assert (
        waiting["Subject"] == f"[{french}] Votre demande est désormais en attente de votre réponse"
    )
    [for_german] = by_recipient["de@acme.example"]
    assert for_german["Subject"] == f"[{german}] Nous avons bien reçu votre demande"
    [no_language] = by_recipient["xx@acme.example"]
    assert no_language["Subject"] == f"[{unknown}] Nous avons bien reçu votre demande"

    # With English first, a customer without a language reads English.
    await store.set_status(unknown, "done", actor="alice", reason="fixed", now=NOW)
    await _mailer(engine, _mail(smtp.port), hotline_languages=("en", "fr")).send_due(NOW)
    assert smtp.inbox.received[-1].message["Subject"] == f"[{unknown}] Your request is now resolved"


# --- the SMTP link: login, STARTTLS, TLS -----------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_login_with_the_configured_secret(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"firstline",
            b"s3cret",
        )
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535

    server = SmtpServer(authenticator=authenticate, auth_required=True, auth_require_tls=False)
    server.start()
    try:
        store = TicketStore(sqlite_engine)
        await _customer(store)
        number = await _ticket(store)
        password = SecretRef(env="FIRSTLINE_TEST_SMTP_PASSWORD")
        config = _mail(server.port, username="firstline", password=password)
        monkeypatch.setenv("FIRSTLINE_TEST_SMTP_PASSWORD", "wrong")
        refused = await _mailer(sqlite_engine, config).send_due(NOW)
        assert (refused.retried, refused.sent) == (1, 0)
        [record] = await _records(sqlite_engine, number)
        assert record.last_error is not None
        assert "535" in record.last_error
        monkeypatch.setenv("FIRSTLINE_TEST_SMTP_PASSWORD", "s3cret")
        accepted = await _mailer(sqlite_engine, config).send_due(NOW + dt.timedelta(hours=1))
        assert accepted.sent == 1
        assert len(server.inbox.received) == 1
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the client trusts exactly this one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make the test certificate"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def _send_one(engine: AsyncEngine, config: Mail, **kwargs: Any) -> str:
    store = TicketStore(engine)
    await _customer(store)
    number = await _ticket(store)
    await _mailer(engine, config, **kwargs).send_due(NOW)
    [record] = await _records(engine, number)
    return record.state if record.state != "pending" else f"pending: {record.last_error}"


async def test_starttls_is_used_and_required(
    sqlite_engine: AsyncEngine, certificate: tuple[Path, Path]
) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    server = SmtpServer(tls_context=_server_context(certificate), require_starttls=True)
    server.start()
    try:
        config = _mail(server.port, security="starttls")
        assert await _send_one(sqlite_engine, config, tls_context=trusted) == "sent"
        assert len(server.inbox.received) == 1
    finally:
        server.stop()


async def test_starttls_never_falls_back_to_plain_text(sqlite_engine: AsyncEngine) -> None:
    server = SmtpServer()  # offers no STARTTLS
    server.start()
    try:
        state = await _send_one(sqlite_engine, _mail(server.port, security="starttls"))
        assert state.startswith("pending: ")
        assert "STARTTLS" in state
        assert server.inbox.received == []
    finally:
        server.stop()


async def test_implicit_tls_checks_the_certificate(
    sqlite_engine: AsyncEngine, certificate: tuple[Path, Path]
) -> None:
    server = SmtpServer()
    server._kwargs["ssl_context"] = _server_context(certificate)
    server.start()
    try:
        config = _mail(server.port, security="tls")
        # The system's CAs do not know the self-signed certificate: nothing is sent.
        untrusted = await _send_one(sqlite_engine, config)
        assert untrusted.startswith("pending: ")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted
        assert server.inbox.received == []
        trusted = ssl.create_default_context(cafile=str(certificate[0]))
        later = _mailer(sqlite_engine, config, tls_context=trusted)
        assert (await later.send_due(NOW + dt.timedelta(hours=1))).sent == 1
        assert len(server.inbox.received) == 1
    finally:
        server.stop()


# --- the running loop ------------------------------------------------------------------------


def _events(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(entry["event"]) for entry in logs]


class _FlakyOutbox:
    """The real outbox, whose first claim fails as a lost database connection would."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._outbox = TicketOutbox(engine)
        self.failures = 1
        self.mark_sent = self._outbox.mark_sent
        self.mark_failed = self._outbox.mark_failed
        self.mark_skipped = self._outbox.mark_skipped

    async def due_notifications(
        self, now: dt.datetime, limit: int, *, lease: dt.timedelta
    ) -> Sequence[OutboxMessage]:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("database connection lost")
        return await self._outbox.due_notifications(now, limit, lease=lease)


async def test_run_survives_errors_and_sends_as_changes_come(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store)
    outbox = _FlakyOutbox(engine)
    mailer = Mailer(
        outbox, _mail(smtp.port), poll_interval=0.05, clock=lambda: NOW + dt.timedelta(hours=1)
    )
    with capture_logs() as logs:
        task = asyncio.create_task(mailer.run())
        try:
            number = await _ticket(store)
            await _wait_for(lambda: len(smtp.inbox.received) == 1)
            await store.set_status(number, "done", actor="alice", reason="fixed", now=NOW)
            await _wait_for(lambda: _events(logs).count("mailer.sent") == 2)
        finally:
            mailer.stop()
            await asyncio.wait_for(task, 15)
    assert outbox.failures == 0
    assert "mailer.pass_failed" in _events(logs)
    assert len(smtp.inbox.received) == 2
    assert smtp.inbox.subjects()[1] == f"[{number}] Your request is now resolved"


async def test_a_full_backlog_is_sent_in_bounded_batches(
    store: TicketStore, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    await _customer(store)
    for _ in range(5):
        await _ticket(store)
    mailer = _mailer(engine, _mail(smtp.port), batch=2)
    assert [(await mailer.send_due(NOW)).claimed for _ in range(4)] == [2, 2, 1, 0]
    assert len(smtp.inbox.received) == 5


# --- the admin's command line ----------------------------------------------------------------


async def test_status_set_from_the_cli_reaches_the_customer(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = tmp_path / "desk.yaml"
    shutil.copy(LIVE_CONFIG, config)
    url = f"sqlite+aiosqlite:///{tmp_path / 'firstline.db'}"
    await migrate(url)
    engine = create_engine_for(url)
    try:
        store = TicketStore(engine)
        await _customer(store)
        now = dt.datetime.now(dt.UTC)
        number = await _ticket(store, now=now)
        mailer = _mailer(engine, _mail(smtp.port), poll_interval=0.05)
        task = asyncio.create_task(mailer.run())  # as the running daemon's mailer
        try:
            await _wait_for(lambda: len(smtp.inbox.received) == 1)
            done = await asyncio.to_thread(
                run_acd,
                "tickets",
                str(config),
                "set-status",
                number,
                "waiting",
                "--reason",
                "asked for logs",
                "--actor",
                "alice",
                env=_cli_env(),
            )
            assert done.returncode == 0, done.stderr
            async with asyncio.timeout(15):
                while {r.state for r in await _records(engine, number)} != {"sent"}:  # noqa: ASYNC110 - another process writes
                    await asyncio.sleep(0.05)
        finally:
            mailer.stop()
            await asyncio.wait_for(task, 15)
        assert smtp.inbox.subjects()[1] == f"[{number}] Your request is now waiting for your reply"
        records = await _records(engine, number)
        assert [(r.kind, r.state) for r in records] == [("created", "sent"), ("status", "sent")]
    finally:
        await engine.dispose()


def _cli_env() -> dict[str, str]:
    return {**os.environ, "FIRSTLINE_TEST_SECRET": "s"}
