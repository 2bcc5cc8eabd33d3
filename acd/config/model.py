"""The admin configuration of Firstline as typed, validated, immutable pydantic models.

One YAML file describes the whole desk: hotline, daemon links, skills, queues, agents,
teams, sites, SLA and feature codes. Every model forbids unknown keys so typos are caught.
Checks that need only one object live here; checks that relate objects (references,
duplicates) live in ``acd.config.load`` because they need the YAML positions.
This module reads no files and no secrets.

Skill levels and queue penalties: a queue names the skills it needs and the minimum level
of each. An agent's *penalty* in a queue is how many levels it falls short of that
requirement on its weakest skill (0 = fully qualified). Escalation steps let the queue
accept agents down to ``min_level`` on the most demanding skill after a wait, i.e. a
maximum penalty of ``top requirement - min_level``. ``Queue.penalty_of`` and
``Queue.max_penalty_schedule`` are the one definition of this for routing and rendering.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import string
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from acd.config.secrets import SecretRef

__all__ = [
    "Agent",
    "AgiLink",
    "AmiLink",
    "Callback",
    "Config",
    "Daemon",
    "EscalationStep",
    "FeatureCodes",
    "Hotline",
    "Ivr",
    "IvrLeaf",
    "IvrMenu",
    "IvrQuestion",
    "IvrRecording",
    "Mail",
    "MailTexts",
    "MetricsEndpoint",
    "Overflow",
    "Queue",
    "ServiceLevel",
    "Sip",
    "Site",
    "Skill",
    "Sla",
    "SlaPackage",
    "SlaPriority",
    "Store",
]

MAX_LEVEL = 5
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _no_number(value: Any) -> Any:
    # YAML reads 0800123 as the integer 800123: numbers must be quoted to survive.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError as a field error
            f"quote this number ('{value}'): unquoted, YAML may change it"
        )
    return value


def _str_keys(value: Any) -> Any:
    # `1: break` in YAML has an int key; digits are names here, so accept and stringify.
    if isinstance(value, Mapping):
        return {str(k) if isinstance(k, int) else k: v for k, v in value.items()}
    return value


Id = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9-]*$", min_length=1, max_length=40),
]
Seconds = Annotated[int, Field(ge=0, le=86_400 * 7)]
PositiveSeconds = Annotated[int, Field(ge=1, le=86_400 * 7)]
Level = Annotated[int, Field(ge=1, le=MAX_LEVEL)]
Extension = Annotated[str, BeforeValidator(_no_number), Field(pattern=r"^[0-9]{1,20}$")]
DialNumber = Annotated[str, BeforeValidator(_no_number), Field(pattern=r"^\+?[0-9]{1,20}$")]
FeatureCode = Annotated[str, Field(pattern=r"^[*#][0-9]{1,6}$")]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$", description="ISO 639-1 code")]
Host = Annotated[str, Field(pattern=r"^[A-Za-z0-9.:_-]+$", min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
SkillLevels = Annotated[dict[Id, Level], BeforeValidator(_str_keys)]
SupportLevel = Literal["first", "second"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hotline(_Model):
    """The numbers callers dial and what every call starts with."""

    numbers: list[DialNumber] = Field(
        min_length=1,
        description="Extensions or E.164 numbers that reach the hotline (quote them).",
    )
    languages: list[Language] = Field(
        min_length=1,
        description="Languages offered to callers (ISO 639-1); the first is the default.",
    )
    region: str = Field(
        default="DE",
        pattern=r"^[A-Z]{2}$",
        description="Default region (ISO 3166-1 alpha-2) for normalising callers' numbers.",
    )
    preferred_ring: PositiveSeconds = Field(
        default=15,
        description="Seconds a caller's ticket owner or account manager rings before the queue.",
    )
    default_queue: Id = Field(
        description="First-level queue every call falls back to when routing is unavailable.",
    )
    recordings_dir: str = Field(
        default="/var/spool/asterisk/monitor/firstline",
        pattern=r"^/[A-Za-z0-9._/-]+$",
        description="Asterisk's folder for recorded conversations and problem descriptions.",
    )
    low_rating: Annotated[int, Field(ge=1, le=4)] = Field(
        default=2,
        description="A rating at or below this flags the caller's ticket for follow-up.",
    )

    @field_validator("numbers", "languages")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        seen = [v for i, v in enumerate(values) if v in values[:i]]
        if seen:
            raise ValueError(f"listed twice: {', '.join(sorted(set(seen)))}")
        return values


class AgiLink(_Model):
    """Where the daemon's FastAGI server listens (the dialplan calls it)."""

    host: Host = Field(default="127.0.0.1", description="Address the FastAGI server binds.")
    port: Port = Field(default=4573, description="TCP port of the FastAGI server.")
    max_sessions: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=256,
        description="Calls the FastAGI server serves at once. A caller holds one for the "
        "whole IVR: size it at the peak's calls per second times the IVR's seconds (and "
        "keep the daemon's open-file limit above it). A call beyond it is not refused: "
        "the dialplan puts it into the hotline's default queue.",
    )


class AmiLink(_Model):
    """How the daemon logs into the Asterisk Manager Interface."""

    host: Host = Field(default="127.0.0.1", description="Address AMI binds and the daemon uses.")
    port: Port = Field(default=5038, description="TCP port of AMI.")
    username: str = Field(
        default="firstline",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="AMI user (a section of manager.conf).",
    )
    secret: SecretRef = Field(description="The AMI user's password.")
    startup_wait: PositiveSeconds | None = Field(
        default=60,
        description="Seconds the daemon waits for its first AMI login when it starts, then "
        "exits with an error (null: keep trying forever). Once logged in, a lost link is "
        "always retried.",
    )


class MetricsEndpoint(_Model):
    """The daemon's Prometheus endpoint."""

    host: Host = Field(default="127.0.0.1", description="Address the metrics endpoint binds.")
    port: Port = Field(default=9648, description="TCP port of the metrics endpoint.")


class WallboardEndpoint(_Model):
    """The live wallboard page (read-only: it changes nothing, so it asks no token)."""

    host: Host = Field(default="127.0.0.1", description="Address the wallboard binds.")
    port: Port = Field(default=9650, description="TCP port of the wallboard.")


class Daemon(_Model):
    """Settings of the Firstline daemon itself."""

    agi: AgiLink = Field(default_factory=AgiLink, description="FastAGI server.")
    ami: AmiLink = Field(description="AMI login.")
    route_timeout: PositiveSeconds = Field(
        default=3,
        le=30,
        description="Seconds the daemon may take for a routing decision before the "
        "dialplan's fallback takes over.",
    )
    metrics: MetricsEndpoint = Field(
        default_factory=MetricsEndpoint, description="Prometheus endpoint."
    )
    wallboard: WallboardEndpoint | None = Field(
        default_factory=WallboardEndpoint,
        description="Live wallboard for the support floor (null: none).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level the daemon logs."
    )


class Store(_Model):
    """Where tickets, customers and call records are kept."""

    url: str | None = Field(
        default=None,
        pattern=r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://",
        description=(
            "SQLAlchemy URL: sqlite+aiosqlite:///PATH (embedded) or "
            "postgresql+asyncpg://USER@HOST/DB. Default: firstline.db beside the config file."
        ),
    )

    def resolved_url(self, config_dir: Path) -> str:
        """The URL to use: the configured one, or firstline.db in the config's folder."""
        if self.url is not None:
            return self.url
        return f"sqlite+aiosqlite:///{(config_dir / 'firstline.db').resolve()}"


class Sip(_Model):
    """The PJSIP transport agents' softphones and inbound callers use."""

    bind: Host = Field(default="127.0.0.1", description="Address the SIP UDP transport binds.")
    port: Port = Field(default=5060, description="UDP port of the SIP transport.")
    anonymous_callers: bool = Field(
        default=True,
        description="Accept calls from unidentified SIP peers (e.g. a trunk or SIPp) into "
        "the hotline. Agents are identified by their auth user name.",
    )


class Skill(_Model):
    """Something an agent can do: a product area, a language, general first-level support."""

    id: Id = Field(description="Short id used by queues and agents.")
    name: str = Field(min_length=1, description="Name shown to people.")


class ServiceLevel(_Model):
    """The queue's service-level target: `target` of calls answered within `answer_within`."""

    answer_within: PositiveSeconds = Field(description="Seconds within which a call counts.")
    target: float = Field(ge=0.0, le=1.0, description="Share of calls to answer in time (0..1).")


class Callback(_Model):
    """The offer to leave the queue and be called back (a ticket for extended support)."""

    enabled: bool = Field(default=True, description="Offer the callback in this queue.")
    digit: str = Field(
        default="9",
        pattern=r"^[0-9*#]$",
        description="The key a waiting caller presses to leave the queue for a callback.",
    )
    offer_every: PositiveSeconds = Field(
        default=30, description="Seconds between the offers played to a waiting caller."
    )
    offer_on_joining_over: Seconds = Field(
        default=60,
        description=(
            "Offer the callback as the caller joins only when the expected wait is over these "
            "seconds (a wait not known reliably counts as long): a short wait is better waited "
            "out. The periodic offers during the wait are not affected."
        ),
    )
    record_description: Annotated[int, Field(ge=0, le=120)] = Field(
        default=0,
        description="Seconds the caller may speak to describe the problem (0: don't ask).",
    )

    @field_validator("digit", mode="before")
    @classmethod
    def _digit_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CallbackDialing(_Model):
    """How callbacks are made: agent first (in the caller's place in line), then the customer."""

    dial: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]+/[^,|&\s]*\{number\}[^,|&\s]*$",
        description=(
            "Dial string of the customer's phone, with {number} for the E.164 number, "
            "e.g. 'PJSIP/{number}@trunk'. Needed when any queue offers callbacks."
        ),
    )
    caller_id: DialNumber | None = Field(
        default=None, description="Number the customer sees (default: the first hotline number)."
    )
    ring_timeout: PositiveSeconds = Field(
        default=30, description="Seconds the customer's phone rings per attempt."
    )
    attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Tries to reach the customer before the ticket waits."
    )
    retry_after: list[PositiveSeconds] = Field(
        default_factory=lambda: [300, 900],
        min_length=1,
        description="Seconds before each retry; the last value repeats.",
    )
    places_per_queue: Annotated[int, Field(ge=1, le=50)] = Field(
        default=3,
        description="Callbacks held in a queue's line at once (app_queue orders them).",
    )
    place_refresh: Annotated[int, Field(ge=10, le=600)] = Field(
        default=60,
        description="Seconds a held place waits before it is renewed (bounds stale places).",
    )


class Overflow(_Model):
    """Send new callers to another queue while the expected wait here is too long."""

    queue: Id = Field(description="Queue that takes the overflow.")
    expected_wait_over: PositiveSeconds = Field(
        description="Overflow when the expected wait exceeds these seconds."
    )


class EscalationStep(_Model):
    """After a wait, accept agents with a lower level on the queue's skills."""

    after: PositiveSeconds = Field(description="Seconds after joining the queue.")
    min_level: Level = Field(description="Lowest skill level accepted from then on.")


class Queue(_Model):
    """An Asterisk queue and the skills its callers need."""

    id: Id = Field(description="Queue name in Asterisk (lowercase letters, digits, '-').")
    name: str = Field(min_length=1, description="Name shown to people.")
    level: SupportLevel = Field(default="first", description="Support level it belongs to.")
    skills: SkillLevels = Field(
        default_factory=dict,
        description="Skill id -> minimum level (1-5) an agent needs to take these calls.",
    )
    strategy: Literal[
        "ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom"
    ] = Field(default="rrmemory", description="Asterisk ring strategy.")
    ring_timeout: PositiveSeconds = Field(
        default=15, description="Seconds an agent's phone rings before the next is tried."
    )
    retry: PositiveSeconds = Field(default=5, description="Seconds to wait before ringing again.")
    wrapup: Seconds = Field(default=10, description="Seconds an agent rests after a call.")
    service_level: ServiceLevel = Field(
        default_factory=lambda: ServiceLevel(answer_within=60, target=0.8),
        description="Service-level target.",
    )
    callback: Callback = Field(default_factory=Callback, description="Callback offer.")
    overflow: Overflow | None = Field(default=None, description="Overflow to another queue.")
    max_wait: PositiveSeconds = Field(
        default=600, description="Seconds a caller waits here before the next step."
    )
    escalation: list[EscalationStep] = Field(
        default_factory=list,
        description="Steps widening the accepted skill levels; `after` strictly increasing, "
        "`min_level` non-increasing.",
    )
    record: bool = Field(
        default=False,
        description="Record the conversations of this queue (into hotline.recordings_dir).",
    )
    rating: bool = Field(
        default=False,
        description="After the agent hangs up, ask the caller to rate the help from 1 to 5.",
    )
    extended_support_team: Id | None = Field(
        default=None, description="Team that takes callback tickets from this queue."
    )
    short_abandon: Seconds = Field(
        default=5, description="Callers hanging up within these seconds don't count as abandoned."
    )

    @field_validator("escalation")
    @classmethod
    def _check_escalation(
        cls, steps: list[EscalationStep], info: ValidationInfo
    ) -> list[EscalationStep]:
        # Fields validate in order: skills and max_wait are known here (if they were valid).
        skills: dict[str, int] = info.data.get("skills") or {}
        max_wait: int | None = info.data.get("max_wait")
        top = max(skills.values(), default=0)
        for prev, step in itertools.pairwise(steps):
            if step.after <= prev.after:
                raise ValueError(f"'after' must increase strictly ({prev.after} then {step.after})")
            if step.min_level > prev.min_level:
                raise ValueError(
                    f"'min_level' must not increase ({prev.min_level} then {step.min_level})"
                )
        if steps and not skills:
            raise ValueError("escalation needs skills to widen; this queue requires none")
        for step in steps:
            if skills and step.min_level >= top:
                raise ValueError(
                    f"min_level {step.min_level} widens nothing "
                    f"(the highest required level is {top})"
                )
            if max_wait is not None and step.after >= max_wait:
                raise ValueError(f"after {step.after} s never comes (max_wait is {max_wait})")
        return steps

    @property
    def top_requirement(self) -> int:
        """The highest level this queue requires on any skill (0 if it requires none)."""
        return max(self.skills.values(), default=0)

    def penalty_of(self, agent_skills: Mapping[str, int]) -> int | None:
        """The agent's shortfall in levels on its weakest required skill; None if it lacks one."""
        shortfall = 0
        for skill, required in self.skills.items():
            have = agent_skills.get(skill)
            if have is None:
                return None
            shortfall = max(shortfall, required - have)
        return shortfall

    def max_penalty_schedule(self) -> list[tuple[int, int]]:
        """(seconds after joining, maximum penalty accepted from then on) for each step."""
        return [(s.after, self.top_requirement - s.min_level) for s in self.escalation]

    @property
    def final_max_penalty(self) -> int:
        """The most lenient penalty this queue ever accepts."""
        schedule = self.max_penalty_schedule()
        return schedule[-1][1] if schedule else 0


class Agent(_Model):
    """A person taking calls, with their softphone."""

    id: Id = Field(description="Short id; also the default PJSIP endpoint name.")
    name: str = Field(min_length=1, description="Name shown to people.")
    extension: Extension = Field(description="The agent's own number (quoted digits).")
    endpoint: Id | None = Field(
        default=None, description="PJSIP endpoint name of the softphone (default: the id)."
    )
    secret: SecretRef = Field(description="Softphone password.")
    interface: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]+/[^\s,|]+$",
        description="Dial string override, e.g. 'Local/alice@test-agents' in tests "
        "(default 'PJSIP/<endpoint>').",
    )
    skills: SkillLevels = Field(default_factory=dict, description="Skill id -> level (1-5).")
    support_level: SupportLevel = Field(default="first", description="Support level.")
    languages: list[Language] = Field(
        default_factory=list, description="Languages the agent speaks (ISO 639-1)."
    )
    site: Id = Field(description="Site (office) the agent works at.")
    supervisor: bool = Field(default=False, description="May take supervisor transfers.")

    @property
    def endpoint_name(self) -> str:
        """The PJSIP endpoint of this agent's softphone."""
        return self.endpoint or self.id

    @property
    def dial_interface(self) -> str:
        """The interface Asterisk dials to reach this agent."""
        return self.interface or f"PJSIP/{self.endpoint_name}"


_DAYS_RE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?$")
_SPAN_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


def _days(key: str) -> list[str]:
    match = _DAYS_RE.match(key)
    if match is None:
        raise ValueError(f"'{key}' is not a day or day range like 'mon' or 'mon-fri'")
    first = WEEKDAYS.index(match.group(1))
    last = WEEKDAYS.index(match.group(2) or match.group(1))
    if last < first:
        raise ValueError(f"day range '{key}' runs backwards (write it as two entries)")
    return list(WEEKDAYS[first : last + 1])


def _span(text: str) -> tuple[dt.time, dt.time]:
    match = _SPAN_RE.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not a time span like '08:00-17:30'")
    start = int(match.group(1)) * 60 + int(match.group(2))
    end = int(match.group(3)) * 60 + int(match.group(4))
    if end <= start or end > 24 * 60:
        raise ValueError(f"time span '{text}' must end after it starts, by 24:00")
    end_time = dt.time.max if end == 24 * 60 else dt.time(end // 60, end % 60)
    return dt.time(start // 60, start % 60), end_time


def _check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{name}' (use an IANA name like 'Europe/Berlin')"
        ) from None
    return name


class Site(_Model):
    """An office with its time zone, opening hours and holidays (follow-the-sun)."""

    id: Id = Field(description="Short id agents refer to.")
    timezone: Annotated[str, AfterValidator(_check_timezone)] = Field(
        description="IANA time zone, e.g. 'Europe/Berlin'."
    )
    hours: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Day or day range ('mon', 'mon-fri') -> spans 'HH:MM-HH:MM' (local time).",
    )
    holidays: list[dt.date] = Field(
        default_factory=list, description="Dates (YYYY-MM-DD) the site is closed."
    )

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, hours: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for key, spans in hours.items():
            for day in _days(key):
                if day in owner:
                    raise ValueError(f"{day} appears in both '{owner[day]}' and '{key}'")
                owner[day] = key
            parsed = sorted(_span(s) for s in spans)
            for (_, end), (start, _) in itertools.pairwise(parsed):
                if start < end:
                    raise ValueError(f"time spans of '{key}' overlap")
        return hours

    def opening_hours(self) -> dict[str, list[tuple[dt.time, dt.time]]]:
        """Weekday ('mon'..'sun') -> sorted local (start, end) spans; closed days are absent."""
        result: dict[str, list[tuple[dt.time, dt.time]]] = {}
        for key, spans in self.hours.items():
            for day in _days(key):
                result[day] = sorted(_span(s) for s in spans)
        return result


class SlaPriority(_Model):
    """A ticket priority and its deadlines."""

    rank: int = Field(ge=0, le=1000, description="Higher ranks are served first.")
    respond_within: PositiveSeconds = Field(description="Seconds to the first response.")
    resolve_within: Annotated[int, Field(ge=1)] = Field(description="Seconds to resolution.")

    @model_validator(mode="after")
    def _order(self) -> SlaPriority:
        if self.resolve_within < self.respond_within:
            raise ValueError("resolve_within must not be shorter than respond_within")
        return self


class SlaPackage(_Model):
    """A support contract: a priority raise and the hours it covers."""

    priority_boost: int = Field(default=0, ge=0, le=10, description="Priority ranks added.")
    coverage: Literal["business_hours", "24x7"] = Field(
        default="business_hours", description="When the contract entitles to service."
    )


class Sla(_Model):
    """Ticket priorities and support packages."""

    priorities: dict[Id, SlaPriority] = Field(
        min_length=1, description="Priority name (e.g. urgent, high, normal, low) -> deadlines."
    )
    packages: dict[Id, SlaPackage] = Field(
        default_factory=dict, description="Package name -> its entitlements."
    )

    @field_validator("priorities")
    @classmethod
    def _unique_ranks(cls, value: dict[str, SlaPriority]) -> dict[str, SlaPriority]:
        ranks = [p.rank for p in value.values()]
        if len(set(ranks)) != len(ranks):
            raise ValueError("two priorities share a rank; ranks must order them")
        return value


class FeatureCodes(_Model):
    """Codes agents dial from their softphones."""

    login: FeatureCode = Field(default="*21", description="Log in to one's queues.")
    logout: FeatureCode = Field(default="*22", description="Log out of all queues.")
    pause: FeatureCode = Field(
        default="*23", description="Pause; dialled followed by a reason digit (pause_reasons)."
    )
    resume: FeatureCode = Field(default="*24", description="End the pause.")
    transfer_second_level: FeatureCode = Field(
        default="*25", description="Hand the current caller to second level."
    )
    transfer_supervisor: FeatureCode = Field(
        default="*26", description="Hand the current caller to a supervisor."
    )

    def as_dict(self) -> dict[str, str]:
        """Feature name -> code."""
        return {name: str(getattr(self, name)) for name in type(self).model_fields}


# --- Customer e-mail -------------------------------------------------------------------------

# What a message template may name, as $name (string.Template: no attribute access, no
# format specs, so an admin's template cannot reach into Python objects).
MAIL_PLACEHOLDERS = (
    "number",
    "status",
    "name",
    "company",
    "category",
    "description",
    "deadline",
    "priority",
)
# The ticket statuses (acd.tickets.status.TicketStatus; a test keeps the two in step): the
# config does not import the store, and customers are told a friendly name, not the id.
TicketStatusName = Literal["first_level", "second_level", "waiting", "dev", "done"]
TICKET_STATUS_NAMES: tuple[str, ...] = (
    "first_level",
    "second_level",
    "waiting",
    "dev",
    "done",
)
# Simple on purpose: catches typos and header tricks, not every RFC 5322 corner.
EmailAddress = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$",
        max_length=254,
        description="An e-mail address like support@example.com.",
    ),
]
HeaderText = Annotated[str, Field(pattern=r"^[^\r\n\x00]+$", max_length=200)]

_DEFAULT_MAIL_TEXTS: dict[str, dict[str, Any]] = {
    "en": {
        "created_subject": "[$number] We have received your request",
        "created_body": (
            "Hello $name,\n\n"
            "we have received your request and opened ticket $number for it.\n\n"
            "Status: $status\n"
            "Priority: $priority\n"
            "We aim to resolve it by: $deadline\n\n"
            "Your request:\n$description\n\n"
            "Please quote $number whenever you contact us about it.\n\n"
            "-- \nThis message was sent automatically.\n"
        ),
        "status_subject": "[$number] Your request is now $status",
        "status_body": (
            "Hello $name,\n\n"
            "there is news about your ticket $number: it is now $status.\n\n"
            "Please quote $number whenever you contact us about it.\n\n"
            "-- \nThis message was sent automatically.\n"
        ),
        "status_names": {
            "first_level": "with our support team",
            "second_level": "with our specialists",
            "waiting": "waiting for your reply",
            "dev": "with our development team",
            "done": "resolved",
        },
    },
    "fr": {
        "created_subject": "[$number] Nous avons bien reçu votre demande",
        "created_body": (
            "Bonjour $name,\n\n"
            "nous avons bien reçu votre demande et ouvert le ticket $number.\n\n"
            "Statut : $status\n"
            "Priorité : $priority\n"
            "Résolution visée avant le : $deadline\n\n"
            "Votre demande :\n$description\n\n"
            "Merci de rappeler le numéro $number dans tout échange à ce sujet.\n\n"
            "-- \nCe message a été envoyé automatiquement.\n"
        ),
        "status_subject": "[$number] Votre demande est désormais $status",
        "status_body": (
            "Bonjour $name,\n\n"
            "du nouveau pour votre ticket $number : il est désormais $status.\n\n"
            "Merci de rappeler le numéro $number dans tout échange à ce sujet.\n\n"
            "-- \nCe message a été envoyé automatiquement.\n"
        ),
        "status_names": {
            "first_level": "pris en charge par notre équipe support",
            "second_level": "entre les mains de nos spécialistes",
            "waiting": "en attente de votre réponse",
            "dev": "transmis à notre équipe de développement",
            "done": "résolu",
        },
    },
}


def _check_template(text: str) -> str:
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError("malformed placeholder: write $name or ${name}, and $$ for a dollar")
    unknown = sorted(set(template.get_identifiers()) - set(MAIL_PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('$' + u for u in unknown)} "
            f"(known: {', '.join('$' + p for p in MAIL_PLACEHOLDERS)})"
        )
    return text


def _check_subject(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("a subject is one line")
    if "number" not in string.Template(text).get_identifiers():
        raise ValueError("a subject must contain $number, so replies name the ticket")
    return text


MailBody = Annotated[str, Field(min_length=1), AfterValidator(_check_template)]
MailSubject = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_template)]


def _with_default_texts(value: Any) -> Any:
    # Languages Firstline ships keep their defaults for every text the admin leaves out;
    # other languages must be given in full.
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return value
    merged: dict[Any, Any] = {
        language: {**texts, "status_names": dict(texts["status_names"])}
        for language, texts in _DEFAULT_MAIL_TEXTS.items()
    }
    for language, texts in value.items():
        base = merged.get(language)
        if base is None or not isinstance(texts, Mapping):
            merged[language] = texts
            continue
        names = texts.get("status_names")
        merged[language] = {**base, **texts}
        if isinstance(names, Mapping):
            merged[language]["status_names"] = {**base["status_names"], **names}
    return merged


class MailTexts(_Model):
    """The customer e-mails of one language: string.Template texts with $placeholders.

    Placeholders: $number, $status (its name below), $name and $company (the customer),
    $category, $description, $deadline, $priority. Subjects must contain $number.
    """

    created_subject: MailSubject = Field(description="Subject of the new-ticket e-mail.")
    created_body: MailBody = Field(description="Body of the new-ticket e-mail (plain text).")
    status_subject: MailSubject = Field(description="Subject of the status-change e-mail.")
    status_body: MailBody = Field(description="Body of the status-change e-mail (plain text).")
    status_names: dict[TicketStatusName, HeaderText] = Field(
        description="Ticket status -> what the customer reads as $status."
    )

    @field_validator("created_subject", "status_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _check_subject(value)

    @field_validator("status_names")
    @classmethod
    def _every_status(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [s for s in TICKET_STATUS_NAMES if s not in value]
        if missing:
            raise ValueError(f"name every status; missing: {', '.join(missing)}")
        return value


class Mail(_Model):
    """E-mail to customers when a ticket is opened and each time its status changes."""

    host: Host = Field(description="SMTP server (host name or address).")
    port: Port = Field(default=587, description="SMTP port: 587 (submission), 465 (tls), 25.")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description=(
            "starttls: plain connect, then STARTTLS, required (port 587); tls: TLS from the "
            "first byte (port 465); none: no encryption (a relay on this host only)."
        ),
    )
    username: str | None = Field(
        default=None, min_length=1, max_length=320, description="SMTP login, if the server asks."
    )
    password: SecretRef | None = Field(
        default=None, description="The SMTP login's password (with username)."
    )
    from_address: EmailAddress = Field(description="Sender address of the e-mails.")
    from_name: HeaderText | None = Field(
        default=None, description="Sender name shown to customers, e.g. 'ACME Support'."
    )
    reply_to: EmailAddress | None = Field(
        default=None, description="Where customers' replies go (default: from_address)."
    )
    timeout: Annotated[int, Field(ge=1, le=600)] = Field(
        default=30, description="Seconds to wait for the SMTP server at each step."
    )
    max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=10, description="Tries per e-mail before it is given up as failed."
    )
    retry_after: PositiveSeconds = Field(
        default=60, description="Seconds before the first retry; doubled after each failure."
    )
    retry_max: PositiveSeconds = Field(
        default=3600, description="Longest wait between two tries, in seconds."
    )
    timezone: Annotated[str, AfterValidator(_check_timezone)] = Field(
        default="UTC", description="IANA time zone the deadline is shown in."
    )
    templates: Annotated[dict[Language, MailTexts], BeforeValidator(_with_default_texts)] = Field(
        default_factory=dict,
        validate_default=True,
        description=(
            "Language -> texts. en and fr are built in (override single texts); the "
            "customer's language picks, else the hotline's first language, else en."
        ),
    )

    @model_validator(mode="after")
    def _login_and_retries(self) -> Mail:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.retry_max < self.retry_after:
            raise ValueError("retry_max must not be shorter than retry_after")
        return self


# --- IVR: what a caller is asked before routing ------------------------------------------

# Menus within menus: deeper trees lose callers, and the bound keeps every flow short.
MAX_IVR_DEPTH = 4
_LEAF_KEYS = ("category", "skills", "priority")


def _check_prompt_text(text: str) -> str:
    # Spoken by espeak-ng through ivr.prompts, which reads {name} as a placeholder.
    if not text.strip():
        raise ValueError("a prompt needs a text")
    if "{" in text or "}" in text:
        raise ValueError("braces are not allowed in an IVR prompt")
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise ValueError("control characters are not allowed in a prompt")
    return text


def _one_key(key: str) -> str:
    if len(key) != 1 or key not in "0123456789":
        raise ValueError(f"'{key}' is not one phone key 0-9")
    return key


Digit = Annotated[str, AfterValidator(_one_key)]
PromptText = Annotated[str, Field(max_length=500), AfterValidator(_check_prompt_text)]
IvrTexts = Annotated[
    dict[Language, PromptText],
    Field(min_length=1, description="Language (ISO 639-1) -> the text spoken in it."),
]
IvrTimeout = Annotated[int, Field(ge=1, le=30)]
IvrRetries = Annotated[int, Field(ge=0, le=5)]
QuestionId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=30)]


def _digit_keys(value: Any) -> Any:
    # `1:` unquoted in YAML is an int key; menu keys are key names, so read it as "1".
    if isinstance(value, Mapping):
        return {
            str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
            for k, v in value.items()
        }
    return value


def _option_kind(value: Any) -> str | None:
    if isinstance(value, IvrMenu) or (
        isinstance(value, Mapping) and ("options" in value or "prompt" in value)
    ):
        return "submenu"
    if isinstance(value, IvrLeaf | Mapping):
        return "leaf"
    return None


class IvrLeaf(_Model):
    """The end of a menu path: what the caller's problem is and who can solve it."""

    category: Id = Field(description="Problem category stored with the call and its ticket.")
    skills: SkillLevels = Field(
        default_factory=dict,
        description="Skill id -> minimum level the call needs (none: the default queue).",
    )
    priority: Id | None = Field(
        default=None, description="Priority hint, a name of sla.priorities (none: no hint)."
    )


class IvrMenu(_Model):
    """A menu: a prompt naming the keys, and what each key leads to (leaf or submenu)."""

    prompt: IvrTexts = Field(description="What the menu says, per language.")
    options: Annotated[
        dict[
            Digit,
            Annotated[
                Annotated[IvrMenu, Tag("submenu")] | Annotated[IvrLeaf, Tag("leaf")],
                Discriminator(
                    _option_kind,
                    custom_error_type="ivr_option",
                    custom_error_message=(
                        "an option is a leaf {category, skills, priority} "
                        "or a submenu {prompt, options}"
                    ),
                ),
            ],
        ],
        BeforeValidator(_digit_keys),
    ] = Field(min_length=1, description="Key (0-9) -> a leaf or a submenu.")
    timeout: IvrTimeout | None = Field(
        default=None, description="Seconds to wait for a key here (default: ivr.timeout)."
    )
    retries: IvrRetries | None = Field(
        default=None, description="Repeats after no or a wrong key here (default: ivr.retries)."
    )

    @model_validator(mode="before")
    @classmethod
    def _not_a_leaf(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            mixed = [key for key in _LEAF_KEYS if key in data]
            if mixed:
                raise ValueError(
                    f"an option is a leaf or a submenu, not both: a submenu (prompt, options) "
                    f"cannot set {', '.join(mixed)}; put them on its options"
                )
        return data

    @field_validator("options")
    @classmethod
    def _bounded_depth(cls, options: dict[str, IvrMenu | IvrLeaf]) -> dict[str, IvrMenu | IvrLeaf]:
        below = max((o.depth for o in options.values() if isinstance(o, IvrMenu)), default=0)
        if 1 + below > MAX_IVR_DEPTH:
            raise ValueError(
                f"menus nest at most {MAX_IVR_DEPTH} deep; this one has {1 + below} levels"
            )
        return options

    @property
    def depth(self) -> int:
        """Levels of menus from this one down (1: only leaves below)."""
        below = (o.depth for o in self.options.values() if isinstance(o, IvrMenu))
        return 1 + max(below, default=0)


class IvrQuestion(_Model):
    """A number the caller types on the keypad after choosing the problem (e.g. a contract)."""

    id: QuestionId = Field(description="Name of the answer (lowercase letters, digits, '_').")
    prompt: IvrTexts = Field(description="What the question says, per language.")
    min_digits: Annotated[int, Field(ge=1, le=20)] = Field(
        default=1, description="Fewest digits of a valid answer."
    )
    max_digits: Annotated[int, Field(ge=1, le=20)] = Field(
        default=20, description="Most digits taken; typing ends with '#' or the timeout."
    )
    check: Literal["none", "luhn", "lookup"] = Field(
        default="none",
        description="luhn: the last digit is a Luhn check digit; lookup: the daemon looks "
        "the number up; none: the digit count alone.",
    )
    optional: bool = Field(
        default=False,
        description="The caller may skip it ('#' alone or silence); after the retries an "
        "optional question is skipped, a required one falls back to the default queue.",
    )
    timeout: IvrTimeout | None = Field(
        default=None, description="Seconds to wait for each digit (default: ivr.timeout)."
    )
    retries: IvrRetries | None = Field(
        default=None, description="Repeats after an invalid answer (default: ivr.retries)."
    )

    @model_validator(mode="after")
    def _digits(self) -> IvrQuestion:
        if self.min_digits > self.max_digits:
            raise ValueError(
                f"min_digits ({self.min_digits}) exceeds max_digits ({self.max_digits})"
            )
        if self.check == "luhn" and self.min_digits < 2:
            raise ValueError("a Luhn-checked number has at least 2 digits (min_digits >= 2)")
        return self


class IvrRecording(_Model):
    """The caller describes the problem in a few words, kept with the call and its ticket."""

    seconds: Annotated[int, Field(ge=0, le=120)] = Field(
        description="Longest recording in seconds (0: don't ask)."
    )
    prompt: IvrTexts | None = Field(
        default=None, description="What asks for the description, per language."
    )

    @model_validator(mode="after")
    def _prompt_when_recording(self) -> IvrRecording:
        if self.seconds > 0 and self.prompt is None:
            raise ValueError("a recording needs a prompt asking for it")
        return self


class Ivr(_Model):
    """What a caller hears and is asked before routing: greeting, language, menu, questions.

    Every text is given per hotline language. Any no input or invalid key is asked again
    up to ``retries`` times; then the call goes to the hotline's default queue.
    """

    greeting: IvrTexts | None = Field(
        default=None, description="Played first, each language in its own voice."
    )
    language_menu: IvrTexts | None = Field(
        default=None,
        description="With several hotline languages: each language's text names its key.",
    )
    language_keys: Annotated[dict[Digit, Language], BeforeValidator(_digit_keys)] | None = Field(
        default=None,
        description="Key -> language (default: 1, 2, ... in the order of hotline.languages).",
    )
    timeout: IvrTimeout = Field(default=5, description="Seconds to wait for a key (1-30).")
    retries: IvrRetries = Field(
        default=2, description="Repeats after no or an invalid key before the fallback (0-5)."
    )
    menu: IvrMenu | None = Field(
        default=None, description="The menu tree; its leaves set category, skills, priority."
    )
    questions: list[IvrQuestion] = Field(
        default_factory=list,
        max_length=5,
        description="Asked in order after a menu leaf was chosen.",
    )
    record_description: IvrRecording | None = Field(
        default=None, description="A short recorded description of the problem (absent: none)."
    )

    @field_validator("language_keys")
    @classmethod
    def _one_key_per_language(cls, keys: dict[str, str] | None) -> dict[str, str] | None:
        if keys is not None:
            twice = sorted({lang for lang in keys.values() if list(keys.values()).count(lang) > 1})
            if twice:
                raise ValueError(f"one key per language; given twice: {', '.join(twice)}")
        return keys

    @field_validator("questions")
    @classmethod
    def _unique_questions(cls, questions: list[IvrQuestion]) -> list[IvrQuestion]:
        ids = [q.id for q in questions]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"question id used twice: {', '.join(twice)}")
        return questions

    def keys_for(self, languages: list[str]) -> dict[str, str]:
        """Key -> language of the language menu for the hotline's ``languages``."""
        if self.language_keys is not None:
            return dict(self.language_keys)
        return {str(i + 1): language for i, language in enumerate(languages[:9])}


class Mqtt(_Model):
    """MQTT: call, agent and ticket events out; monitoring alerts ("auto-informer") in."""

    host: Host = Field(default="127.0.0.1", description="MQTT broker.")
    port: Port = Field(default=1883, description="MQTT broker port (8883 with tls).")
    tls: bool = Field(default=False, description="TLS to the broker (system CA certificates).")
    username: str | None = Field(
        default=None, min_length=1, max_length=256, description="Broker login, if it asks."
    )
    password: SecretRef | None = Field(default=None, description="The broker login's password.")
    client_id: str = Field(
        default="firstline",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="MQTT client id (unique per daemon on the broker).",
    )
    topic_prefix: str = Field(
        default="firstline",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Events go to <prefix>/call, <prefix>/agent, <prefix>/ticket.",
    )
    alerts_topic: str | None = Field(
        default="firstline/alerts",
        pattern=r"^[A-Za-z0-9_+#/-]+$",
        description="Topic (filter) monitoring alerts arrive on (null: none).",
    )
    alerts_queue: Id | None = Field(
        default=None,
        description="Queue whose skills an alert's ticket needs (default: the hotline's).",
    )
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=10_000,
        description="Events kept while the broker is away; beyond that they are dropped "
        "(and counted), never blocking calls.",
    )


class Config(_Model):
    """The whole Firstline configuration (one YAML file)."""

    hotline: Hotline = Field(description="The hotline callers dial.")
    daemon: Daemon = Field(description="The Firstline daemon.")
    sip: Sip = Field(default_factory=Sip, description="SIP transport.")
    store: Store = Field(default_factory=Store, description="Tickets and customers.")
    skills: list[Skill] = Field(min_length=1, description="All skills.")
    queues: list[Queue] = Field(min_length=1, description="All queues.")
    agents: list[Agent] = Field(default_factory=list, description="All agents.")
    teams: dict[Id, list[Id]] = Field(
        default_factory=dict, description="Team id -> agent ids (e.g. extended-support)."
    )
    sites: list[Site] = Field(min_length=1, description="Offices.")
    sla: Sla = Field(description="Ticket priorities and support packages.")
    feature_codes: FeatureCodes = Field(
        default_factory=FeatureCodes, description="Agents' feature codes."
    )
    pause_reasons: Annotated[
        dict[Annotated[str, Field(pattern=r"^[0-9]$")], str], BeforeValidator(_str_keys)
    ] = Field(
        default_factory=lambda: {"1": "break", "2": "back-office", "3": "training"},
        description="Digit dialled after the pause code -> reason name.",
    )
    mail: Mail | None = Field(
        default=None, description="E-mail to customers about their tickets (none: no e-mail)."
    )
    mqtt: Mqtt | None = Field(default=None, description="MQTT events and alerts (none: no MQTT).")
    callback: CallbackDialing = Field(
        default_factory=CallbackDialing, description="Making the callbacks callers asked for."
    )
    ivr: Ivr | None = Field(
        default=None,
        description="Greeting, language choice, menu and questions before routing (none: "
        "callers go straight to routing).",
    )

    def queue(self, queue_id: str) -> Queue:
        """The queue with this id (KeyError if none)."""
        for queue in self.queues:
            if queue.id == queue_id:
                return queue
        raise KeyError(queue_id)

    def agent(self, agent_id: str) -> Agent:
        """The agent with this id (KeyError if none)."""
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        raise KeyError(agent_id)

    def secret_refs(self) -> list[tuple[tuple[str | int, ...], SecretRef]]:
        """Every secret reference with its location in the config."""
        refs: list[tuple[tuple[str | int, ...], SecretRef]] = [
            (("daemon", "ami", "secret"), self.daemon.ami.secret)
        ]
        refs.extend((("agents", i, "secret"), a.secret) for i, a in enumerate(self.agents))
        return refs
