"""Rendering the example desk: the files say what the YAML says, and Asterisk 22 agrees."""

from __future__ import annotations

import re
import shutil
import socket
import stat
import time
from pathlib import Path

import pytest

from acd.config import Config, init_missing_secret_files, load_config
from pbx_config import SECRET_FILES, RenderError, render, write_rendered

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "desk.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The example, with its secret files created in a private folder."""
    path = tmp_path / "desk.yaml"
    shutil.copy(EXAMPLE, path)
    loaded = load_config(path)
    init_missing_secret_files(loaded)
    return loaded


def _sections(text: str) -> dict[str, list[str]]:
    """Section name -> its lines (sections of one name, e.g. pjsip's, are concatenated)."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        match = re.match(r"^\[([^\]]+)\]", line)
        if match:
            current = match.group(1)
            out.setdefault(current, [])
        elif current and line and not line.startswith(";"):
            out[current].append(line)
    return out


def test_render_is_deterministic_and_sorted(config: Config) -> None:
    first = render(config)
    assert first == render(config)
    assert list(first) == sorted(first)
    assert {"asterisk.conf", "extensions.conf", "manager.conf", "modules.conf"} <= set(first)


def test_one_queue_section_per_queue(config: Config) -> None:
    queues = _sections(render(config)["queues.conf"])
    assert set(queues) == {"general"} | {q.id for q in config.queues}
    for queue in config.queues:
        lines = queues[queue.id]
        assert f"strategy = {queue.strategy}" in lines
        assert f"timeout = {queue.ring_timeout}" in lines
        assert f"wrapuptime = {queue.wrapup}" in lines
        assert "announce-position = no" in lines
        assert ("defaultrule = " + queue.id in lines) == bool(queue.escalation)
        assert (f"context = firstline-queue-{queue.id}" in lines) == queue.callback.enabled
        assert ("monitor-format = wav" in lines) == queue.record


def test_the_periodic_offer_plays_the_installed_prompt_of_the_key(
    config: Config, tmp_path: Path
) -> None:
    """`*` and `#` name their prompt files "star" and "hash" (ivr.prompts): the periodic offer
    must play that file, not a "callback-offer-*" Asterisk cannot find."""
    queues = _sections(render(config)["queues.conf"])
    assert "periodic-announce = firstline/callback-offer-9" in queues["first-en"]
    text = EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "starred.yaml"
    path.write_text(text.replace('digit: "9"', 'digit: "*"', 1), encoding="utf-8")
    starred = load_config(path)
    init_missing_secret_files(starred)
    assert starred.queue("first-en").callback.digit == "*"
    queues = _sections(render(starred)["queues.conf"])
    assert "periodic-announce = firstline/callback-offer-star" in queues["first-en"]


def test_penaltychange_lines_follow_escalation(config: Config) -> None:
    rules = _sections(render(config)["queuerules.conf"])
    assert rules["first-en"] == ["penaltychange => 45,1", "penaltychange => 120,2"]
    assert rules["second-printing"] == ["penaltychange => 90,1"]
    assert "second-licensing" not in rules


def test_one_endpoint_auth_aor_per_agent(config: Config) -> None:
    pjsip = render(config)["pjsip.conf"]
    for agent in config.agents:
        name = agent.endpoint_name
        assert pjsip.count(f"[{name}]\n") == 2  # endpoint and aor
        assert f"[{name}-auth]\n" in pjsip
        secret = agent.secret.reveal()
        assert f"password = {secret}\n" in pjsip
        assert f'callerid = "{agent.name}" <{agent.extension}>' in pjsip
    assert pjsip.count("type = endpoint") == len(config.agents) + 1  # + anonymous
    assert "bind = 127.0.0.1:5060" in pjsip
    assert pjsip.count("direct_media = no") == len(config.agents) + 1


def test_hotline_asks_the_daemon_and_falls_back(config: Config) -> None:
    dialplan = render(config)["extensions.conf"]
    hotline = _sections(dialplan)["firstline-hotline"]
    for number in config.hotline.numbers:
        assert f"exten => {number},1,Set(FIRSTLINE_DIALED=${{EXTEN}})" in hotline
    text = "\n".join(hotline)
    assert "AGI(agi://127.0.0.1:4573/route,${FIRSTLINE_DIALED})" in text
    assert "Queue(first-en,b(firstline-agent-leg^s^1(" in text  # the fallback
    assert "})),,,600,,firstline-agent-answered)" in text
    # The decision counts only when the daemon set the queue during this very AGI call.
    assert text.index("Set(FIRSTLINE_QUEUE=)") < text.index("/route,")
    assert 'GotoIf($["${FIRSTLINE_QUEUE}" != ""]?queue,1)' in text
    assert "QUEUE_MAX_PENALTY=)" not in text  # an empty value makes app_queue warn
    assert "Hangup" not in text  # a caller is never hung up on by the hotline
    assert dialplan.rstrip().endswith("#tryinclude extensions_local.conf")


def test_queue_contexts_and_agent_codes(config: Config) -> None:
    sections = _sections(render(config)["extensions.conf"])
    assert "firstline-queue-second-cad" not in sections  # callback disabled there
    first_en = "\n".join(sections["firstline-queue-first-en"])
    # The welcome announcement is interruptible by the escape digit, like the wait itself.
    assert first_en.startswith('exten => enter,1,GotoIf($["${FIRSTLINE_ANNOUNCE}" = ""]?wait)')
    assert " same => n,Background(${FIRSTLINE_ANNOUNCE})" in first_en
    assert "exten => 9,1,Set(FIRSTLINE_CALLBACK=)" in first_en
    assert "AGI(agi://127.0.0.1:4573/callback,first-en)" in first_en
    # Only the daemon's own word counts as booked; anything else goes back into the queue.
    assert 'GotoIf($["${FIRSTLINE_CALLBACK}" = "booked"]?booked)' in first_en
    # The number is read from the dialplan, after the daemon committed the ticket.
    assert first_en.index("?booked)") < first_en.index(
        "SayDigits(${FILTER(0-9,${FIRSTLINE_TICKET})})"
    )
    # Back at the caller's place when nothing was booked.
    assert (
        '})),,,${IF($["${FIRSTLINE_MAX_WAIT}" = ""]?600:${FIRSTLINE_MAX_WAIT})},'
        ",firstline-agent-answered,,${QUEUEPOSITION})" in first_en
    )
    # The agent's phone is told the ticket, category and customer (PJSIP agents only).
    leg = (
        "b(firstline-agent-leg^s^1"
        "(${FIRSTLINE_TICKET}^${FIRSTLINE_CATEGORY}^${FIRSTLINE_CUSTOMER}))"
    )
    assert f"Queue(first-en,{leg},,," in first_en
    agent_leg = "\n".join(sections["firstline-agent-leg"])
    assert 'GotoIf($["${CHANNEL(channeltype)}" != "PJSIP"]?done)' in agent_leg
    for n, header in enumerate(
        ("X-Firstline-Ticket", "X-Firstline-Category", "X-Firstline-Customer"), 1
    ):
        assert f"Set(PJSIP_HEADER(add,{header})=${{ARG{n}}})" in agent_leg
    held = "\n".join(sections["firstline-callback"])
    assert ",firstline-callback-whisper,${FIRSTLINE_CB_RULE}," in held
    # A callback's ringing leg shows its ticket like a live call's.
    assert "b(firstline-agent-leg^s^1(${FIRSTLINE_CB_TICKET}^^))" in held
    assert "Set(CALLERID(name)=)" in held  # the customer sees the hotline, not the agent
    assert "Set(CHANNEL(hangup_handler_push)=firstline-callback,result,1)" in held
    assert "AGI(agi://127.0.0.1:4573/callback-result,${FIRSTLINE_CB_ID},${DIALSTATUS})" in held
    agents = "\n".join(sections["firstline-agents"])
    assert "exten => _*23X,1,Answer()" in agents
    assert "AGI(agi://127.0.0.1:4573/agent,pause,${EXTEN:3})" in agents
    for agent in config.agents:
        assert f"exten => {agent.extension},1,Dial({agent.dial_interface},30)" in agents


def test_manager_user_and_filters(config: Config) -> None:
    manager = render(config)["manager.conf"]
    assert f"secret = {config.daemon.ami.secret.reveal()}" in manager
    assert "timestampevents = yes" in manager
    assert "eventfilter(action(include),name(QueueCallerJoin)) =" in manager
    assert "command" not in manager.split("write = ")[1].splitlines()[0]


def test_write_rendered_modes_and_atomicity(config: Config, tmp_path: Path) -> None:
    out = tmp_path / "etc"
    files = render(config)
    written = write_rendered(files, out)
    assert sorted(p.name for p in written) == sorted(files)
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.name in SECRET_FILES else 0o644), path.name
        assert path.read_text(encoding="utf-8") == files[path.name]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no temp files left
    with pytest.raises(RenderError):
        write_rendered({"../escape.conf": ""}, out)


def test_secret_syntax_is_escaped_or_refused(config: Config, tmp_path: Path) -> None:
    path = config.daemon.ami.secret.path
    assert path is not None
    path.write_text("semi;colon\n", encoding="utf-8")
    assert "secret = semi\\;colon" in render(config)["manager.conf"]
    path.write_text("two\nlines\n", encoding="utf-8")
    with pytest.raises(RenderError, match="line break"):
        render(config)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HARNESS = """\
[test-agents]
exten => alice,1,Answer()
 same => n,Wait(1)
 same => n,Hangup()

[test-callers]
exten => caller,1,Answer()
 same => n,Wait(4)
 same => n,Hangup()
"""


def _ami(secret: str, *actions: dict[str, str], wait: float) -> str:
    with socket.create_connection(("127.0.0.1", 5038), timeout=5) as sock:
        login = {"Action": "Login", "Username": "firstline", "Secret": secret}
        for action in (login, *actions):
            sock.sendall(("".join(f"{k}: {v}\r\n" for k, v in action.items()) + "\r\n").encode())
            time.sleep(0.3)
        time.sleep(wait)
        sock.settimeout(0.5)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data.decode("utf-8", "replace")


@pytest.mark.live
def test_example_loads_cleanly_in_asterisk(pbx, config: Config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The daemon is not running: point the dialplan at a closed port to see the fallback.
    agi = config.daemon.agi.model_copy(update={"port": _free_port()})
    daemon = config.daemon.model_copy(update={"agi": agi})
    conf_dir = tmp_path / "etc"
    write_rendered(render(config.model_copy(update={"daemon": daemon})), conf_dir)
    (conf_dir / "extensions_local.conf").write_text(HARNESS, encoding="utf-8")

    pbx.start(conf_dir)
    queues = pbx.cli("queue show")
    for queue in config.queues:
        assert re.search(
            rf"^{re.escape(queue.id)} has .* in '{queue.strategy}' strategy", queues, re.M
        )
    endpoints = pbx.cli("pjsip show endpoints")
    for agent in config.agents:
        assert f"Endpoint:  {agent.endpoint_name}/{agent.extension} " in endpoints
    hotline = pbx.cli("dialplan show firstline-hotline")
    assert "AGI(agi://127.0.0.1:" in hotline
    assert "})),,,600,,firstline-agent-answered)" in hotline

    # A caller whose routing fails still reaches an agent; only filtered events arrive.
    events = _ami(
        config.daemon.ami.secret.reveal(),
        # A member left in astdb by an earlier run would make QueueAdd a no-op.
        {"Action": "QueueRemove", "Queue": "first-en", "Interface": "Local/alice@test-agents"},
        {"Action": "QueueAdd", "Queue": "first-en", "Interface": "Local/alice@test-agents"},
        {
            "Action": "Originate",
            "Channel": "Local/caller@test-callers",
            "Context": "firstline-hotline",
            "Exten": config.hotline.numbers[0],
            "Priority": "1",
            "Async": "true",
        },
        wait=4,
    )
    names = set(re.findall(r"^Event: (\w+)", events, re.M))
    assert {"QueueCallerJoin", "AgentCalled", "AgentConnect", "QueueMemberAdded"} <= names
    assert names.isdisjoint({"VarSet", "Newexten", "Newstate", "TestEvent"})
    # persistentmembers keeps members in astdb: don't leave ours to the next config.
    pbx.cli("queue remove member Local/alice@test-agents from first-en")
    errors = pbx.errors_since_start()
    assert errors == [], "\n".join(errors)


def test_rtp_binds_to_the_sip_address_so_asterisk_never_looks_up_its_host_name(
    config: Config,
) -> None:
    """Bound to any address, Asterisk resolves its own host name for each call's media
    (an ERROR per call where it does not resolve): on one address, media stays there."""
    endpoints = _sections(render(config)["pjsip.conf"])
    agent = config.agents[0].endpoint_name
    for name in ("anonymous", agent):
        assert "media_address = 127.0.0.1" in endpoints[name]
        assert "bind_rtp_to_media_address = yes" in endpoints[name]
    anywhere = config.model_copy(update={"sip": config.sip.model_copy(update={"bind": "0.0.0.0"})})
    assert "media_address" not in render(anywhere)["pjsip.conf"]
