"""The `mail:` section: the example stays valid, mistakes are reported where they are."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from acd.config import ConfigInvalid, load_config
from acd.config.model import TICKET_STATUS_NAMES, Mail, TicketStatusName
from acd.tickets import TicketStatus

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "desk.yaml"
MAIL_MARK = "\n#mail:\n"


def _example_with_mail_enabled(tmp_path: Path, edit: str = "") -> Path:
    """The example with its commented mail block switched on (plus `edit` appended to it)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    head, found, block = text.partition(MAIL_MARK)
    assert found, "examples/desk.yaml lost its commented '#mail:' block"
    lines = ("#mail:\n" + block).splitlines()
    assert all(line.startswith("#") for line in lines), "the mail block must end the file"
    path = tmp_path / "desk.yaml"
    path.write_text(head + "\n" + "\n".join(line[1:] for line in lines) + "\n" + edit)
    return path


def test_the_example_mail_block_is_valid(tmp_path: Path) -> None:
    config = load_config(_example_with_mail_enabled(tmp_path))
    mail = config.mail
    assert mail is not None
    assert (mail.host, mail.port, mail.security) == ("smtp.example.com", 587, "starttls")
    assert mail.password is not None
    assert mail.password.path == tmp_path / "secrets" / "smtp.secret"
    assert sorted(mail.templates) == ["de", "en", "fr"]
    # One French text overridden, the rest kept from the built-in defaults.
    assert mail.templates["fr"].status_names["done"] == "résolu et clos"
    assert mail.templates["fr"].status_names["waiting"] == "en attente de votre réponse"
    assert mail.templates["fr"].created_subject.startswith("[$number]")


def test_the_example_without_the_block_sends_no_mail() -> None:
    assert load_config(EXAMPLE).mail is None


def test_mistakes_are_reported_at_their_line(tmp_path: Path) -> None:
    path = _example_with_mail_enabled(tmp_path)
    text = path.read_text(encoding="utf-8")
    text = text.replace("from_address: support@example.com", "from_address: support@@example")
    text = text.replace(
        '      created_subject: "[$number] Ihre Anfrage ist eingegangen"',
        '      created_subject: "Ihre Anfrage $ticket"',
    )
    text = text.replace("  security: starttls", "  security: ssl")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    lines = text.splitlines()
    by_line = {i.line: i.message for i in caught.value.issues}
    assert "support@@example" in lines[_line_of(by_line, "pattern") - 1]
    assert "security: ssl" in lines[_line_of(by_line, "'starttls'") - 1]
    subject_line = _line_of(by_line, "unknown placeholder(s) $ticket")
    assert "Ihre Anfrage $ticket" in lines[subject_line - 1]


def _line_of(by_line: dict[int, str], fragment: str) -> int:
    found = [line for line, message in by_line.items() if fragment in message]
    assert len(found) == 1, by_line
    return found[0]


def _mail(**values: typing.Any) -> Mail:
    return Mail.model_validate(
        {"host": "smtp.example.com", "from_address": "a@b.example", **values}
    )


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"username": "firstline"}, "both username and password"),
        ({"password": {"env": "SMTP_PASSWORD"}}, "both username and password"),
        ({"username": "u", "password": "hunter2"}, "secrets never live in the YAML"),
        ({"from_address": "a@b.example\r\nBcc: c@d.example"}, "pattern"),
        ({"reply_to": "not an address"}, "pattern"),
        ({"from_name": "Support\r\nBcc: c@d.example"}, "pattern"),
        ({"retry_after": 600, "retry_max": 60}, "retry_max"),
        ({"timezone": "Europe/Pariss"}, "unknown time zone"),
        ({"templates": {"en": {"created_subject": "Hello"}}}, "must contain $number"),
        ({"templates": {"en": {"status_subject": "[$number]\nBcc: x"}}}, "one line"),
        ({"templates": {"en": {"status_body": "costs $5"}}}, "malformed placeholder"),
        ({"templates": {"en": {"status_names": {"closed": "x"}}}}, "status_names"),
        ({"templates": {"de": {"created_subject": "[$number]"}}}, "Field required"),
    ],
)
def test_invalid_mail_settings_are_refused(values: dict[str, typing.Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _mail(**values)
    assert fragment in str(caught.value)


def test_defaults() -> None:
    mail = _mail()
    assert (mail.port, mail.security, mail.timeout, mail.max_attempts) == (587, "starttls", 30, 10)
    assert sorted(mail.templates) == ["en", "fr"]
    for texts in mail.templates.values():
        assert sorted(texts.status_names) == sorted(TICKET_STATUS_NAMES)


def test_status_names_follow_the_ticket_lifecycle() -> None:
    statuses = [s.value for s in TicketStatus]
    assert list(TICKET_STATUS_NAMES) == statuses
    assert list(typing.get_args(TicketStatusName)) == statuses


def test_the_example_mqtt_block_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("#mqtt:\n")
    end = text.index("\n\n", start)
    block = "\n".join(line[1:] for line in text[start:end].splitlines())
    config = load_config(_example_with_mail_enabled(tmp_path, edit=block + "\n"))
    assert config.mqtt is not None
    assert (config.mqtt.topic_prefix, config.mqtt.alerts_topic) == ("firstline", "firstline/alerts")
    assert config.mqtt.alerts_queue == "first-en"
