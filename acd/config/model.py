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
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
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


class MetricsEndpoint(_Model):
    """The daemon's Prometheus endpoint."""

    host: Host = Field(default="127.0.0.1", description="Address the metrics endpoint binds.")
    port: Port = Field(default=9648, description="TCP port of the metrics endpoint.")


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

    @field_validator("digit", mode="before")
    @classmethod
    def _digit_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


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
    record: bool = Field(default=False, description="Record the calls of this queue.")
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
