"""Admin commands on the store: tickets for people, the customer directory.

Used by the CLI (``acd tickets …``, ``acd customers import``). Input from files is checked
row by row and reported with its row number; an import is all or nothing. Times come from
the caller (``now``); nothing here reads configuration files.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from acd.config import Config
from acd.numbers import normalise_number
from acd.tickets import Customer, HistoryEntry, Ticket

__all__ = [
    "CustomerFileError",
    "parse_customers",
    "ticket_json",
    "ticket_line",
]

_CUSTOMER_FIELDS = (
    "id",
    "company",
    "name",
    "phones",
    "sla_package",
    "language",
    "account_manager",
    "email",
)
_MAX_ROWS = 100_000


class CustomerFileError(ValueError):
    """The directory file has mistakes; ``problems`` lists each with its row."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__("\n".join(f"{path}: {p}" for p in problems))
        self.problems = problems


def parse_customers(path: Path, config: Config) -> list[Customer]:
    """Read a customer directory (CSV with a header row, or YAML: a list of mappings).

    Columns: id, company, name, phones (numbers separated by ';'), sla_package, language,
    account_manager, email. Numbers are normalised to E.164 with the hotline's region;
    packages and account managers must exist in ``config``. Every mistake is reported.
    """
    try:
        rows = _rows(path)
    except (OSError, UnicodeDecodeError, YAMLError, csv.Error, ValueError) as error:
        raise CustomerFileError(path, [f"cannot read: {error}"]) from None
    packages = set(config.sla.packages)
    agents = {agent.id for agent in config.agents}
    problems: list[str] = []
    customers: list[Customer] = []
    seen_ids: set[str] = set()
    seen_numbers: dict[str, str] = {}
    for index, row in enumerate(rows, start=1):
        where = f"row {index}"
        unknown = set(row) - set(_CUSTOMER_FIELDS)
        if unknown:
            problems.append(f"{where}: unknown column(s) {', '.join(sorted(unknown))}")
        values = {key: str(row.get(key) or "").strip() for key in _CUSTOMER_FIELDS}
        if not values["id"]:
            problems.append(f"{where}: id is missing")
            continue
        if values["id"] in seen_ids:
            problems.append(f"{where}: id {values['id']!r} appears twice")
        seen_ids.add(values["id"])
        phones: list[str] = []
        for raw in filter(None, (p.strip() for p in values["phones"].split(";"))):
            number = normalise_number(raw, config.hotline.region)
            if number is None:
                problems.append(f"{where}: {raw!r} is not a phone number")
            elif number in seen_numbers:
                problems.append(f"{where}: {number} is also {seen_numbers[number]!r}'s number")
            else:
                seen_numbers[number] = values["id"]
                phones.append(number)
        if values["sla_package"] and values["sla_package"] not in packages:
            problems.append(
                f"{where}: unknown SLA package {values['sla_package']!r} "
                f"(known: {', '.join(sorted(packages))})"
            )
        if values["account_manager"] and values["account_manager"] not in agents:
            problems.append(f"{where}: unknown agent {values['account_manager']!r}")
        customers.append(
            Customer(
                id=values["id"],
                company=values["company"],
                name=values["name"],
                phones=tuple(phones),
                sla_package=values["sla_package"] or None,
                language=values["language"] or None,
                account_manager=values["account_manager"] or None,
                email=values["email"] or None,
            )
        )
    if problems:
        raise CustomerFileError(path, problems)
    return customers


def _rows(path: Path) -> list[Mapping[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        data = YAML(typ="safe").load(text)
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise ValueError("a YAML directory is a list of mappings")
        rows: list[Mapping[str, Any]] = data
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) > _MAX_ROWS:
        raise ValueError(f"more than {_MAX_ROWS} rows")
    return rows


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def ticket_json(ticket: Ticket, history: Iterable[HistoryEntry] | None = None) -> str:
    """One ticket (and its history) as JSON."""
    data: dict[str, object] = {
        f.name: _plain(getattr(ticket, f.name)) for f in dataclasses.fields(ticket)
    }
    if history is not None:
        data["history"] = [
            {f.name: _plain(getattr(entry, f.name)) for f in dataclasses.fields(entry)}
            for entry in history
        ]
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def ticket_line(ticket: Ticket) -> str:
    """One ticket as a line of a table for people."""
    return (
        f"{ticket.number:<12} {ticket.status.value:<13} {ticket.priority:<8} "
        f"{(ticket.owner or '-'):<10} {ticket.deadline:%Y-%m-%d %H:%M}Z  "
        f"{(ticket.caller_number or '-'):<16} {ticket.category or ''}"
    )
