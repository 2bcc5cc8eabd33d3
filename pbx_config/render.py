"""Render the Asterisk 22 configuration of a Firstline desk from its config model alone.

``render`` is a pure function of the ``Config`` (secret values come through
``SecretRef.reveal``): same config, same bytes. ``write_rendered`` is the only I/O here; it
writes each file atomically, secrets readable by the owner only. Nothing here talks to a
running Asterisk, and nothing outside the returned files is read or written.

The dialplan keeps one promise above all: a caller always ends with a person. Whatever the
daemon does (no answer, an error, an unknown queue), the call falls back to the default
first-level queue and stays there; only agents hear an error message.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from acd.config.model import Agent, Config, Queue
from ivr.prompts import sound

__all__ = ["HELD_PLACE_RULE", "SECRET_FILES", "RenderError", "render", "write_rendered"]

#: Rendered files that hold secrets (written 0600).
SECRET_FILES = frozenset({"manager.conf", "pjsip.conf"})

# Modules autoload would start that log ERRORs without a config of their own in our chroot,
# or that a support hotline on PJSIP has no use for. Each line says why.
_NOLOAD: tuple[tuple[str, str], ...] = (
    # Without a config of their own these log ERRORs at start (seen on Debian's 22.10).
    ("res_stir_shaken.so", "caller-ID attestation: needs stir_shaken.conf"),
    ("res_pjsip_stir_shaken.so", "depends on res_stir_shaken"),
    ("res_geolocation.so", "needs geolocation.conf"),
    ("res_pjsip_geolocation.so", "depends on res_geolocation"),
    ("res_crypto.so", "needs /var/lib/asterisk/keys; only IAX2/DUNDi/STIR use keys"),
    ("func_aes.so", "depends on res_crypto"),
    ("res_ari.so", "ARI (needs ari.conf): Firstline uses AMI and FastAGI"),
    ("res_ari_applications.so", "depends on res_ari"),
    ("res_ari_asterisk.so", "depends on res_ari"),
    ("res_ari_bridges.so", "depends on res_ari"),
    ("res_ari_channels.so", "depends on res_ari"),
    ("res_ari_device_states.so", "depends on res_ari"),
    ("res_ari_endpoints.so", "depends on res_ari"),
    ("res_ari_events.so", "depends on res_ari"),
    ("res_ari_model.so", "depends on res_ari"),
    ("res_ari_playbacks.so", "depends on res_ari"),
    ("res_ari_recordings.so", "depends on res_ari"),
    ("res_ari_sounds.so", "depends on res_ari"),
    ("res_websocket_client.so", "needs websocket_client.conf; not used"),
    ("chan_websocket.so", "needs chan_websocket.conf; not used"),
    ("res_pjsip_config_wizard.so", "needs pjsip_wizard.conf; pjsip.conf is rendered in full"),
    ("res_pjsip_notify.so", "needs pjsip_notify.conf; not used"),
    ("res_parking.so", "call parking (needs res_parking.conf): callers wait in queues"),
    ("app_agent_pool.so", "chan_agent's successor (needs agents.conf): queue members instead"),
    ("app_confbridge.so", "conferences (needs confbridge.conf): not used"),
    ("app_page.so", "depends on app_confbridge"),
    ("cdr_csv.so", "CDR file (needs cdr.conf): the daemon reports from AMI events"),
    ("cdr_custom.so", "CDR backend without config"),
    ("cel_custom.so", "CEL backend without config"),
    ("res_http_media_cache.so", "needs res_http_media_cache.conf; prompts are local files"),
    ("pbx_dundi.so", "DUNDi peering (needs dundi.conf): not used"),
    ("pbx_lua.so", "Lua dialplan (needs extensions.lua): extensions.conf is rendered"),
    ("pbx_ael.so", "AEL dialplan (needs extensions.ael): extensions.conf is rendered"),
    ("res_clialiases.so", "needs cli_aliases.conf; not used"),
    ("app_amd.so", "answering-machine detection (needs amd.conf): not used"),
    ("app_followme.so", "needs followme.conf; not used"),
    ("app_alarmreceiver.so", "alarm panels (needs alarmreceiver.conf): not used"),
    ("res_calendar.so", "calendars: opening hours live in Firstline's config"),
    ("res_calendar_caldav.so", "depends on res_calendar"),
    ("res_calendar_ews.so", "depends on res_calendar"),
    ("res_calendar_exchange.so", "depends on res_calendar"),
    ("res_calendar_icalendar.so", "depends on res_calendar"),
    ("res_odbc.so", "no ODBC database"),
    ("res_odbc_transaction.so", "depends on res_odbc"),
    ("func_odbc.so", "depends on res_odbc"),
    ("res_config_odbc.so", "depends on res_odbc"),
    ("cdr_odbc.so", "depends on res_odbc"),
    ("cdr_adaptive_odbc.so", "depends on res_odbc"),
    ("cel_odbc.so", "depends on res_odbc"),
    ("app_voicemail_odbc.so", "depends on res_odbc; and registers the same apps twice"),
    ("app_stasis.so", "needs res_ari's symbols; Stasis apps are ARI's"),
    ("res_stasis_broadcast.so", "depends on app_stasis"),
    ("app_stasis_broadcast.so", "depends on app_stasis"),
    ("res_aeap.so", "external speech engines (needs aeap.conf): not used"),
    ("res_speech_aeap.so", "depends on res_aeap"),
    # Not failing, but of no use to a support hotline on PJSIP (fewer WARNINGs, less noise).
    ("chan_iax2.so", "IAX2 trunks: we speak SIP only"),
    ("chan_unistim.so", "Nortel phones: not used"),
    ("chan_motif.so", "Jingle: not used"),
    ("res_xmpp.so", "XMPP: not used"),
    ("chan_console.so", "sound-card console: none on a server"),
    ("app_voicemail.so", "voicemail: callers get a callback instead"),
    ("app_minivm.so", "voicemail: not used"),
    ("app_festival.so", "text-to-speech server: not used"),
    ("app_adsiprog.so", "ADSI phones: deprecated"),
    ("app_getcpeid.so", "ADSI phones: deprecated"),
    ("res_adsi.so", "ADSI phones: deprecated"),
    ("res_config_pgsql.so", "no realtime PostgreSQL"),
    ("res_config_ldap.so", "no realtime LDAP"),
    ("res_config_sqlite3.so", "no realtime SQLite"),
    ("res_snmp.so", "no SNMP agent: metrics come from the daemon"),
    ("res_hep.so", "no Homer capture server"),
    ("res_hep_pjsip.so", "depends on res_hep"),
    ("res_hep_rtcp.so", "depends on res_hep"),
    ("res_stun_monitor.so", "no NAT to watch on a loopback PBX"),
    ("cdr_pgsql.so", "CDR backend without config"),
    ("cdr_tds.so", "CDR backend without config"),
    ("cdr_radius.so", "CDR backend without config"),
    ("cdr_sqlite3_custom.so", "CDR backend without config"),
    ("cdr_manager.so", "CDRs over AMI: the daemon uses queue events"),
    ("cel_pgsql.so", "CEL backend without config"),
    ("cel_tds.so", "CEL backend without config"),
    ("cel_radius.so", "CEL backend without config"),
    ("cel_sqlite3_custom.so", "CEL backend without config"),
    ("cel_manager.so", "CEL over AMI: not used"),
    ("res_phoneprov.so", "phone provisioning over HTTP: not used"),
    ("res_pjsip_phoneprov_provider.so", "depends on res_phoneprov"),
    ("res_statsd.so", "no statsd: metrics come from the daemon"),
    ("res_prometheus.so", "the daemon exports the desk's metrics"),
    ("res_smdi.so", "SMDI voicemail links: not used"),
)

# AMI events the daemon reads. Responses to its own actions (QueueStatus -> QueueParams,
# QueueMember, QueueEntry, QueueStatusComplete; CoreShowChannels -> CoreShowChannel, ...)
# are listed too so an action's EventList always arrives complete.
_AMI_EVENTS: tuple[str, ...] = (
    "FullyBooted",
    "Shutdown",
    "Reload",
    "Newchannel",
    "Hangup",
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentConnect",
    "AgentComplete",
    "AgentRingNoAnswer",
    "AgentDump",
    "QueueMemberAdded",
    "QueueMemberRemoved",
    "QueueMemberPause",
    "QueueMemberStatus",
    "QueueMemberPenalty",
    "QueueMemberRinginuse",
    "QueueParams",
    "QueueMember",
    "QueueEntry",
    "QueueStatusComplete",
    "QueueSummary",
    "QueueSummaryComplete",
    "CoreShowChannel",
    "CoreShowChannelsComplete",
    "UserEvent",
    # A ticket owner or account manager is rung with Dial() before the queue.
    "DialBegin",
    "DialEnd",
    "OriginateResponse",
)

HELD_PLACE_RULE = "firstline-held"
# SIP headers on an agent's ringing leg, in the order of the agent-leg gosub's arguments.
AGENT_HEADERS = ("X-Firstline-Ticket", "X-Firstline-Category", "X-Firstline-Customer")
_ANSWERED = "firstline-agent-answered"
_TO_RATING = 'GotoIf($["${QUEUESTATUS}" = "CONTINUE"]?firstline-rating,s,1)'
_AGENT_LEG = (
    "b(firstline-agent-leg^s^1(${FIRSTLINE_TICKET}^${FIRSTLINE_CATEGORY}^${FIRSTLINE_CUSTOMER}))"
)
_MAX_PENALTY_DEFAULT = 0  # fully qualified agents only, until the queue's rule widens it


class RenderError(Exception):
    """The configuration cannot be rendered (e.g. a secret unusable in Asterisk's syntax)."""


def render(config: Config) -> dict[str, str]:
    """File name -> content of the whole Asterisk configuration, sorted by name."""
    files = {
        "asterisk.conf": _asterisk_conf(config),
        "extensions.conf": _extensions_conf(config),
        "logger.conf": _logger_conf(),
        "manager.conf": _manager_conf(config),
        "modules.conf": _modules_conf(),
        "indications.conf": _indications_conf(),
        **_quiet_confs(),
        "musiconhold.conf": _musiconhold_conf(),
        "pjsip.conf": _pjsip_conf(config),
        "queuerules.conf": _queuerules_conf(config),
        "queues.conf": _queues_conf(config),
    }
    return dict(sorted(files.items()))


def write_rendered(files: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Write ``files`` into ``out_dir`` atomically (0600 for secrets, else 0644)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, content in sorted(files.items()):
        if "/" in name or name.startswith("."):
            raise RenderError(f"refusing to write outside {out_dir}: {name!r}")
        target = out_dir / name
        mode = 0o600 if name in SECRET_FILES else 0o644
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


# --- helpers --------------------------------------------------------------------------------


def _header(what: str) -> str:
    return f"; {what}\n; Rendered by Firstline from its YAML configuration: edit that, not this.\n"


def _section(name: str, settings: Iterable[tuple[str, str | int]], comment: str = "") -> str:
    lines = [f"[{name}]"]
    if comment:
        lines.insert(0, f"; {comment}")
    lines.extend(f"{key} = {value}" for key, value in settings)
    return "\n".join(lines) + "\n"


def _secret(value: str, where: str) -> str:
    # Asterisk's config syntax: ';' starts a comment, a line break ends the value.
    if any(c in value for c in "\r\n\x00"):
        raise RenderError(f"the secret of {where} contains a line break or NUL")
    return value.replace(";", "\\;")


def _agi(config: Config, script: str) -> str:
    agi = config.daemon.agi
    return f"agi://{agi.host}:{agi.port}/{script}"


# --- asterisk.conf, modules.conf, logger.conf, musiconhold.conf ------------------------------


def _asterisk_conf(config: Config) -> str:
    directories = [
        ("astcachedir", "/var/cache/asterisk"),
        ("astetcdir", "/etc/asterisk"),
        ("astmoddir", "/usr/lib/x86_64-linux-gnu/asterisk/modules"),
        ("astvarlibdir", "/var/lib/asterisk"),
        ("astdbdir", "/var/lib/asterisk"),
        ("astkeydir", "/var/lib/asterisk"),
        ("astdatadir", "/usr/share/asterisk"),
        ("astagidir", "/usr/share/asterisk/agi-bin"),
        ("astspooldir", "/var/spool/asterisk"),
        ("astrundir", "/var/run/asterisk"),
        ("astlogdir", "/var/log/asterisk"),
        ("astsbindir", "/usr/sbin"),
    ]
    options: list[tuple[str, str | int]] = [
        ("verbose", 3),
        ("debug", 0),
        ("defaultlanguage", config.hotline.languages[0]),
        # Tests and the daemon use `asterisk -rx` often; their connects are noise in the log.
        ("hideconnect", "yes"),
    ]
    return "\n".join(
        [
            _header("Asterisk's folders (Debian layout) and core options."),
            _section("directories", directories),
            _section("options", options),
        ]
    )


def _modules_conf() -> str:
    lines = [_header("Modules: everything Debian ships, minus what we don't use."), "[modules]"]
    lines.append("autoload = yes")
    width = max(len(name) for name, _ in _NOLOAD)
    lines.extend(f"noload = {name:<{width}} ; {why}" for name, why in _NOLOAD)
    return "\n".join(lines) + "\n"


def _logger_conf() -> str:
    return "\n".join(
        [
            _header("Logging: a full log with every level (tests read it) and the console."),
            _section("general", [("dateformat", "%F %T.%3q")]),
            _section(
                "logfiles",
                [
                    ("full", "notice,warning,error,verbose,dtmf"),
                    ("console", "notice,warning,error,verbose"),
                ],
            ),
        ]
    )


def _quiet_confs() -> dict[str, str]:
    # Core parts that log an ERROR when their file is missing; their defaults are right.
    why = {
        "acl.conf": "Named ACLs: none (AMI and SIP bind to the configured addresses).",
        "cdr.conf": "Call detail records: off; the daemon reports from queue events.",
        "ccss.conf": "Call completion (CCSS): Asterisk's defaults.",
        "cel.conf": "Channel event logging: off.",
        "features.conf": "Call features: Asterisk's defaults.",
        "pjproject.conf": "pjproject: Asterisk's defaults.",
        "udptl.conf": "T.38 fax transport: Asterisk's defaults (no fax on a hotline).",
    }
    body = {
        "cdr.conf": _section("general", [("enable", "no")]),
        "ccss.conf": _section("general", []),
        "cel.conf": _section("general", [("enable", "no")]),
        "features.conf": _section("general", []),
        "udptl.conf": _section("general", []),
    }
    return {name: _header(text) + body.get(name, "") for name, text in why.items()}


def _indications_conf() -> str:
    # Ringback and busy tones for Dial(); without the file Asterisk warns at start.
    return "\n".join(
        [
            _header("Tones: North American defaults."),
            _section("general", [("country", "us")]),
            _section(
                "us",
                [
                    ("description", "United States / North America"),
                    ("ringcadence", "2000,4000"),
                    ("dial", "350+440"),
                    ("busy", "480+620/500,0/500"),
                    ("ring", "440+480/2000,0/4000"),
                    ("congestion", "480+620/250,0/250"),
                    ("callwaiting", "440/300,0/10000"),
                    ("record", "1400/500,0/15000"),
                    ("info", "!950/330,!1400/330,!1800/330,0"),
                ],
            ),
        ]
    )


def _musiconhold_conf() -> str:
    return _header("Music on hold: the opsound files of asterisk-moh-opsound.") + _section(
        "default", [("mode", "files"), ("directory", "moh"), ("sort", "random")]
    )


# --- manager.conf ---------------------------------------------------------------------------


def _manager_conf(config: Config) -> str:
    ami = config.daemon.ami
    secret = _secret(ami.secret.reveal(), "daemon.ami")
    general = _section(
        "general",
        [
            ("enabled", "yes"),
            ("webenabled", "no"),
            ("bindaddr", ami.host),
            ("port", ami.port),
            ("timestampevents", "yes"),
            ("displayconnects", "no"),
        ],
    )
    user = [
        f"[{ami.username}]",
        f"secret = {secret}",
        "deny = 0.0.0.0/0.0.0.0",
        "permit = 127.0.0.1/255.255.255.255",
        *(
            [f"permit = {ami.host}/255.255.255.255"]
            if ami.host not in {"127.0.0.1", "0.0.0.0", "::", "localhost"}  # noqa: S104
            else []
        ),
        "; read: system = FullyBooted/Shutdown/Reload; call = Newchannel/Hangup;",
        ";       agent = queue and member events; user = UserEvent from the dialplan.",
        "read = system,call,agent,user",
        "; write: call = Redirect/Setvar/Hangup of callers; agent = QueueAdd/Remove/Pause/",
        ";        Penalty; originate = callbacks; reporting = CoreShowChannels/QueueStatus;",
        ";        system = QueueReload/Reload after a config change. No 'command': the daemon",
        ";        never needs arbitrary CLI commands (which include 'core stop').",
        "write = system,call,agent,originate,reporting",
        "; Only the events the daemon reads (advanced filter syntax: exact names, no regex).",
    ]
    user.extend(f"eventfilter(action(include),name({event})) =" for event in _AMI_EVENTS)
    return "\n".join([_header("AMI: one user for the Firstline daemon."), general, *user]) + "\n"


# --- pjsip.conf -----------------------------------------------------------------------------

_MEDIA: tuple[tuple[str, str], ...] = (
    ("disallow", "all"),
    ("allow", "ulaw,alaw"),
    # Bridged legs on one host would be re-INVITEd to talk directly; keep media here.
    ("direct_media", "no"),
    ("dtmf_mode", "rfc4733"),
)


def _media(config: Config) -> tuple[tuple[str, str], ...]:
    """RTP bound to the SIP address when that is one IP address: bound to any address,
    Asterisk looks its own host name up for every call's media (an ERROR per call where
    the host name does not resolve)."""
    try:
        address = ipaddress.ip_address(config.sip.bind)
    except ValueError:
        return _MEDIA
    if address.is_unspecified:
        return _MEDIA
    return (*_MEDIA, ("media_address", str(address)), ("bind_rtp_to_media_address", "yes"))


def _pjsip_conf(config: Config) -> str:
    sip = config.sip
    media = _media(config)
    parts = [
        _header("SIP: one transport, the hotline's inbound endpoint, one endpoint per agent."),
        _section(
            "transport-udp",
            [("type", "transport"), ("protocol", "udp"), ("bind", f"{sip.bind}:{sip.port}")],
        ),
    ]
    if sip.anonymous_callers:
        parts.append(
            _section(
                "anonymous",
                [
                    ("type", "endpoint"),
                    ("context", "firstline-hotline"),
                    *media,
                    ("language", config.hotline.languages[0]),
                ],
                comment="Unidentified callers (trunk, SIPp) reach the hotline, nothing else.",
            )
        )
    for agent in config.agents:
        parts.extend(_pjsip_agent(agent, media))
    return "\n".join(parts)


def _pjsip_agent(agent: Agent, media: tuple[tuple[str, str], ...]) -> list[str]:
    name = agent.endpoint_name
    language = agent.languages[0] if agent.languages else None
    endpoint: list[tuple[str, str | int]] = [
        ("type", "endpoint"),
        ("context", "firstline-agents"),
        *media,
        ("auth", f"{name}-auth"),
        ("aors", name),
        ("callerid", f'"{agent.name}" <{agent.extension}>'),
    ]
    if language is not None:
        endpoint.append(("language", language))
    return [
        _section(name, endpoint, comment=f"Agent {agent.id}: {agent.name}"),
        _section(
            f"{name}-auth",
            [
                ("type", "auth"),
                ("auth_type", "userpass"),
                ("username", name),
                ("password", _secret(agent.secret.reveal(), f"agent {agent.id}")),
            ],
        ),
        _section(name, [("type", "aor"), ("max_contacts", 1), ("remove_existing", "yes")]),
    ]


# --- queues.conf, queuerules.conf -----------------------------------------------------------


def _queues_conf(config: Config) -> str:
    general = _section(
        "general",
        [
            ("persistentmembers", "yes"),
            # A member's last call counts in every queue: no double-ringing across queues.
            ("shared_lastcall", "yes"),
            ("autofill", "yes"),
            ("log_membername_as_agent", "yes"),
        ],
    )
    parts = [_header("Queues: one per configured queue."), general]
    parts.extend(_queue_section(queue) for queue in config.queues)
    return "\n".join(parts)


def _queue_section(queue: Queue) -> str:
    settings: list[tuple[str, str | int]] = [
        ("strategy", queue.strategy),
        ("timeout", queue.ring_timeout),
        ("retry", queue.retry),
        ("wrapuptime", queue.wrapup),
        ("maxlen", 0),
        ("servicelevel", queue.service_level.answer_within),
        ("musicclass", "default"),
        # Position/hold-time announcements swallow the callback digit while they play
        # (seen on Asterisk 22.10): a promised key press must never be ignored.
        ("announce-position", "no"),
        ("announce-holdtime", "no"),
        # Callers may wait when nobody is logged in and are never pushed out for it:
        # max_wait bounds the wait and the dialplan's fallback keeps them with a person.
        ("joinempty", "yes"),
        ("leavewhenempty", "no"),
        ("ringinuse", "no"),
        ("timeoutrestart", "no"),
        ("setinterfacevar", "yes"),
        ("setqueueentryvar", "yes"),
    ]
    if queue.callback.enabled:
        settings += [
            ("periodic-announce", sound("callback-offer", queue.callback.digit)),
            ("periodic-announce-frequency", queue.callback.offer_every),
            # A digit with an extension in this context takes the caller out of Queue().
            ("context", f"firstline-queue-{queue.id}"),
        ]
    if queue.escalation:
        settings.append(("defaultrule", queue.id))
    if queue.record:
        settings.append(("monitor-format", "wav"))
    return _section(queue.id, settings, comment=queue.name)


def _queuerules_conf(config: Config) -> str:
    parts = [
        _header(
            "Queue rules: escalation raises QUEUE_MAX_PENALTY (penalty = levels short of the "
            "queue's requirement) after a wait."
        ),
        "[general]\n",
        # A callback's held place gets the bound its caller earned by waiting, from the
        # dialer, renewed with the place: no rule may narrow it again.
        _section(HELD_PLACE_RULE, [("penaltychange", "86400,+0")]).replace(" = ", " => "),
    ]
    for queue in config.queues:
        if not queue.escalation:
            continue
        steps = [("penaltychange", f"{after},{pen}") for after, pen in queue.max_penalty_schedule()]
        parts.append(_section(queue.id, steps).replace(" = ", " => "))
    return "\n".join(parts)


# --- extensions.conf ------------------------------------------------------------------------


def _ext(exten: str, steps: list[str]) -> list[str]:
    """One extension: the first step at priority 1, the rest as `same => n`."""
    first, *rest = steps
    return [f"exten => {exten},1,{first}", *(f" same => n{step}" for step in rest)]


def _label(name: str, app: str) -> str:
    return f"({name}),{app}"


def _step(app: str) -> str:
    return f",{app}"


def _extensions_conf(config: Config) -> str:
    parts = [
        _header("Dialplan: hotline, queue escape digits, agents' feature codes."),
        _section("general", [("static", "yes"), ("writeprotect", "yes")]),
        _hotline_context(config),
        *(_queue_context(config, q) for q in config.queues if q.callback.enabled),
        _callback_contexts(config),
        _rating_context(config),
        _agents_context(config),
        "; Site-local additions (and the tests' Local-channel harness) live here.\n"
        "#tryinclude extensions_local.conf\n",
    ]
    return "\n".join(parts)


def _hotline_context(config: Config) -> str:
    default = config.queue(config.hotline.default_queue)
    language = config.hotline.languages[0]
    lines = [
        "; Every hotline number: ask the daemon where the call goes; if it cannot say",
        "; (down, slow, error, no queue), the default queue takes the call.",
        "[firstline-hotline]",
    ]
    for number in config.hotline.numbers:
        lines += _ext(number, ["Set(FIRSTLINE_DIALED=${EXTEN})", _step("Goto(route,1)")])
    lines += _ext(
        "route",
        [
            "Answer()",
            _step(f"Set(CHANNEL(language)={language})"),
            # The daemon sets FIRSTLINE_QUEUE last, only once its decision is complete;
            # AGISTATUS alone proves nothing (a closed connection also reads SUCCESS, and
            # one failed prompt turns it to FAILURE for the rest of the session).
            _step("Set(FIRSTLINE_QUEUE=)"),
            _step("Set(FIRSTLINE_PREFERRED=)"),
            _step(f"AGI({_agi(config, 'route')},${{FIRSTLINE_DIALED}})"),
            _step('GotoIf($["${FIRSTLINE_QUEUE}" != ""]?queue,1)'),
            _step("Goto(fallback,1)"),
        ],
    )
    lines += _ext(
        "queue",
        [
            'Set(QUEUE_PRIO=${IF($["${FIRSTLINE_PRIO}" = ""]?0:${FIRSTLINE_PRIO})})',
            # Queue rules only change QUEUE_MAX_PENALTY if the dialplan set it first.
            _step(
                'Set(QUEUE_MAX_PENALTY=${IF($["${FIRSTLINE_MAX_PENALTY}" = ""]?'
                f"{_MAX_PENALTY_DEFAULT}:${{FIRSTLINE_MAX_PENALTY}})}})"
            ),
            _step(
                'ExecIf($["${FIRSTLINE_MIN_PENALTY}" != ""]?'
                "Set(QUEUE_MIN_PENALTY=${FIRSTLINE_MIN_PENALTY}))"
            ),
            # The caller's ticket owner or account manager first, when the daemon names
            # one; without an answer the call goes on into the queue, raised in priority.
            # (Without Dial's "g" option an answered call ends here when it is over.)
            _step(
                'ExecIf($["${FIRSTLINE_PREFERRED}" != ""]?'
                f"Dial(${{FIRSTLINE_PREFERRED}},${{FIRSTLINE_PREFERRED_RING}},{_AGENT_LEG}))"
            ),
            # A queue that offers callbacks waits in its own context, where the escape
            # digit is an extension (see firstline-queue-<id>).
            _step(
                "GotoIf($[${DIALPLAN_EXISTS(firstline-queue-${FIRSTLINE_QUEUE},enter,1)}]"
                "?firstline-queue-${FIRSTLINE_QUEUE},enter,1)"
            ),
            _step(
                f"Queue(${{FIRSTLINE_QUEUE}},${{FIRSTLINE_QUEUE_OPTIONS}}{_AGENT_LEG},,,"
                f"{_max_wait(default.max_wait)},,{_ANSWERED})"
            ),
            _step(_TO_RATING),
            # Timed out, or the queue did not exist: the default queue, never a hangup.
            _step("Goto(fallback,1)"),
        ],
    )
    lines += _ext(
        "fallback",
        [
            # Without the daemon the queue's own escalation rule still widens the
            # penalty bound from fully qualified agents on; never an empty value (app_queue
            # warns and ignores it).
            f"Set(QUEUE_MAX_PENALTY={_MAX_PENALTY_DEFAULT})",
            _step("Set(QUEUE_MIN_PENALTY=0)"),
            _label(
                "again",
                f"Queue({default.id},{_options(default)},,,{default.max_wait},,{_ANSWERED})",
            ),
            _step(_TO_RATING),
            _step('GotoIf($["${QUEUESTATUS}" = "TIMEOUT"]?again)'),
            # Queue() returned at once (e.g. the queue failed to load): don't spin.
            _step("MusicOnHold(,20)"),
            _step("Goto(again)"),
        ],
    )
    lines += _ext("i", ["Goto(route,1)"])
    lines += _ext("h", ["NoOp(Firstline: ${CHANNEL} left the hotline, ${QUEUESTATUS})"])
    return "\n".join(lines) + "\n"


def _options(queue: Queue) -> str:
    """Queue() options: 'c' lets the caller go on to the rating when the agent hangs up."""
    return ("c" if queue.rating else "") + _AGENT_LEG


def _rating_context(config: Config) -> str:
    lines = [
        "; After the agent hung up (Queue's c option, queues with rating): the caller rates",
        "; the help from 1 to 5; the daemon stores it with the call and its ticket.",
        "[firstline-rating]",
    ]
    lines += _ext("s", [f"AGI({_agi(config, 'rate')})", _step("Hangup()")])
    lines += [
        "",
        "; Runs on the agent's channel when it answers a queue call (Queue's gosub): records",
        "; the conversation when the daemon named a file (queues with record).",
        "[firstline-agent-answered]",
    ]
    lines += _ext(
        "s",
        [
            'ExecIf($["${FIRSTLINE_RECORDING}" != ""]?MixMonitor(${FIRSTLINE_RECORDING}.wav,b))',
            _step("Return()"),
        ],
    )
    return "\n".join(lines) + "\n"


def _max_wait(default: int) -> str:
    return f'${{IF($["${{FIRSTLINE_MAX_WAIT}}" = ""]?{default}:${{FIRSTLINE_MAX_WAIT}})}}'


def _queue_context(config: Config, queue: Queue) -> str:
    digit = queue.callback.digit
    wait = _max_wait(queue.max_wait)
    lines = [
        f"; Callers of {queue.id} wait here; pressing {digit} at any moment asks for a callback:",
        "; during the welcome announcement (Background) as during the wait (Queue with",
        "; context=). The daemon books it and sets FIRSTLINE_CALLBACK=booked only after the",
        "; ticket is committed; the number is then read from here, so it is read even if the",
        "; daemon dies right after. Anything else puts the caller back at their place.",
        f"[firstline-queue-{queue.id}]",
    ]
    lines += _ext(
        "enter",
        [
            'GotoIf($["${FIRSTLINE_ANNOUNCE}" = ""]?wait)',
            # Expected wait and the offer, interruptible by the escape digit.
            _step("Background(${FIRSTLINE_ANNOUNCE})"),
            _label("wait", f"Queue({queue.id},{_options(queue)},,,{wait},,{_ANSWERED})"),
            _step(_TO_RATING),
            _step("Goto(firstline-hotline,fallback,1)"),
        ],
    )
    lines += _ext(
        digit,
        [
            "Set(FIRSTLINE_CALLBACK=)",
            _step("Set(FIRSTLINE_TICKET=)"),
            _step(f"AGI({_agi(config, 'callback')},{queue.id})"),
            _step('GotoIf($["${FIRSTLINE_CALLBACK}" = "booked"]?booked)'),
            _step('GotoIf($["${FIRSTLINE_CALLBACK}" = "extended"]?extended)'),
            # Daemon down, database down, or the caller gave up on the questions.
            _step(
                'ExecIf($["${FIRSTLINE_CALLBACK}" != "cancelled"]?'
                "Playback(firstline/callback-failed))"
            ),
            # Back at the place the caller left (QUEUEPOSITION, set by app_queue on leaving).
            _label(
                "back",
                f"Queue({queue.id},{_options(queue)},,,{wait},,{_ANSWERED},,${{QUEUEPOSITION}})",
            ),
            _step(_TO_RATING),
            _step("Goto(firstline-hotline,fallback,1)"),
            _label("extended", "Playback(firstline/extended-support)"),
            # However this ends, the daemon learns it at hangup: answered, the callback is
            # done; not, it goes back to the dialer (the ticket stands either way).
            _step(
                "Set(CHANNEL(hangup_handler_push)=firstline-callback,extended,1"
                "(${FIRSTLINE_CALLBACK_ID},${FIRSTLINE_PREFERRED}))"
            ),
            _step(f"Dial(${{FIRSTLINE_PREFERRED}},${{FIRSTLINE_PREFERRED_RING}},{_AGENT_LEG})"),
            _step('GotoIf($["${DIALSTATUS}" = "ANSWER"]?done)'),
            _label(
                "booked",
                'ExecIf($["${FIRSTLINE_CALLBACK_NOTE}" != ""]?'
                "Playback(${FIRSTLINE_CALLBACK_NOTE}))",
            ),
            _step("Playback(firstline/ticket-number-is)"),
            _step("SayDigits(${FILTER(0-9,${FIRSTLINE_TICKET})})"),
            _step("Playback(firstline/callback-booked)"),
            _label("done", "Hangup()"),
        ],
    )
    lines += _ext("i", ["Goto(enter,wait)"])
    return "\n".join(lines) + "\n"


def _callback_contexts(config: Config) -> str:
    """The held place of a callback in its queue, the whisper, and the customer's leg."""
    dial = config.callback
    lines = [
        "; A callback's held place (the ;2 half of the dialer's Local channel) waits in the",
        "; queue at its caller's place. When an agent answers, the agent hears the ticket",
        "; (gosub on the member channel), the held place is answered, and the ;1 half",
        "; continues at 'customer': the customer is dialled and the daemon told the result.",
        "[firstline-callback]",
    ]
    lines += _ext(
        "hold",
        [
            "Set(QUEUE_PRIO=${FIRSTLINE_CB_PRIO})",
            _step("Set(QUEUE_MAX_PENALTY=${FIRSTLINE_CB_MAX_PENALTY})"),
            _step("Set(QUEUE_MIN_PENALTY=0)"),
            _step(
                # The agent's channel inherits FIRSTLINE_CB_TICKET for the whisper.
                # Its ringing leg carries the ticket in the same SIP header as a live call's.
                "Queue(${FIRSTLINE_CB_QUEUE},b(firstline-agent-leg^s^1(${FIRSTLINE_CB_TICKET}^^)),"
                ",,${FIRSTLINE_CB_WAIT},,"
                "firstline-callback-whisper,${FIRSTLINE_CB_RULE},${FIRSTLINE_CB_POSITION})"
            ),
            _step("Hangup()"),
        ],
    )
    lines += _ext(
        "customer",
        [
            f"AGI({_agi(config, 'callback-dial')},${{FIRSTLINE_CB_ID}})",
            _step('GotoIf($["${FIRSTLINE_CB_DIAL}" = ""]?gone)'),
            _step(f"Set(CALLERID(num)={dial.caller_id or config.hotline.numbers[0]})"),
            # The leg started as the agent's: the customer sees the hotline, not a name.
            _step("Set(CALLERID(name)=)"),
            # The result is reported however the leg ends (either side may hang up).
            _step("Set(CHANNEL(hangup_handler_push)=firstline-callback,result,1)"),
            _step(f"Dial(${{FIRSTLINE_CB_DIAL}},{dial.ring_timeout})"),
            _step(
                'ExecIf($["${DIALSTATUS}" != "ANSWER"]?'
                "Playback(firstline/callback-customer-unreachable))"
            ),
            _label("gone", "Hangup()"),
        ],
    )
    lines += _ext(
        "result",
        [
            f"AGI({_agi(config, 'callback-result')},${{FIRSTLINE_CB_ID}},${{DIALSTATUS}})",
            _step("Return()"),
        ],
    )
    lines += _ext(
        "extended",
        [
            f"AGI({_agi(config, 'callback-extended')},${{ARG1}},${{DIALSTATUS}},${{ARG2}})",
            _step("Return()"),
        ],
    )
    lines += [
        "",
        "; Runs on the agent's channel before the agent is connected (Queue's gosub).",
        "[firstline-callback-whisper]",
    ]
    lines += _ext(
        "s",
        [
            "Playback(firstline/whisper-callback)",
            # The sequence part as a number ("ticket four thousand seven hundred eleven"):
            # the agent's screen shows the whole number; every second here is waiting.
            _step("SayNumber(${CUT(FIRSTLINE_CB_TICKET,-,2)})"),
            _step("Playback(firstline/whisper-connecting)"),
            _step("Return()"),
        ],
    )
    lines += [
        "",
        "; Runs on an agent's outgoing leg before it rings (the b option of Queue and Dial):",
        "; the softphone shows what the caller told the IVR and who they are in SIP headers.",
        "; Values come from the daemon (ids and ticket numbers only, never caller input).",
        "[firstline-agent-leg]",
    ]
    steps = ['GotoIf($["${CHANNEL(channeltype)}" != "PJSIP"]?done)']
    for n, header in enumerate(AGENT_HEADERS, 1):
        steps.append(
            _step(f'ExecIf($["${{ARG{n}}}" != ""]?Set(PJSIP_HEADER(add,{header})=${{ARG{n}}}))')
        )
    steps.append(_label("done", "Return()"))
    lines += _ext("s", steps)
    return "\n".join(lines) + "\n"


def _agent_action(config: Config, code: str, args: str) -> list[str]:
    return _ext(
        code,
        [
            "Answer()",
            _step("Set(FIRSTLINE_AGENT_OK=)"),
            _step(f"AGI({_agi(config, 'agent')},{args})"),
            _step('GotoIf($["${FIRSTLINE_AGENT_OK}" = "1"]?done)'),
            # An agent, not a caller: say it failed and hang up.
            _step("Playback(an-error-has-occurred)"),
            _step("Hangup()"),
            _label("done", "Playback(beep)"),
            _step("Hangup()"),
        ],
    )


def _transfer(config: Config, code: str, target: str) -> list[str]:
    # Runs on the caller's channel after the agent's blind transfer: never drop it.
    return _ext(
        code,
        [
            "Set(FIRSTLINE_QUEUE=)",
            _step("Set(FIRSTLINE_PREFERRED=)"),
            _step(f"AGI({_agi(config, 'transfer')},{target})"),
            _step('GotoIf($["${FIRSTLINE_QUEUE}" != ""]?firstline-hotline,queue,1)'),
            _step("Goto(firstline-hotline,fallback,1)"),
        ],
    )


def _agents_context(config: Config) -> str:
    codes = config.feature_codes
    pause_len = len(codes.pause)
    lines = ["; Agents' softphones: feature codes and each other.", "[firstline-agents]"]
    lines += _agent_action(config, codes.login, "login")
    lines += _agent_action(config, codes.logout, "logout")
    lines += _agent_action(config, codes.pause, "pause")
    lines += _agent_action(config, f"_{codes.pause}X", f"pause,${{EXTEN:{pause_len}}}")
    lines += _agent_action(config, codes.resume, "resume")
    lines += _transfer(config, codes.transfer_second_level, "second-level")
    lines += _transfer(config, codes.transfer_supervisor, "supervisor")
    for agent in config.agents:
        lines += _ext(agent.extension, [f"Dial({agent.dial_interface},30)", _step("Hangup()")])
    return "\n".join(lines) + "\n"
