"""Live: the real Asterisk plays Firstline's generated prompts in English and French.

``render_live`` installs the live config's prompts into the root's sounds folder; a small
dialplan context here sets CHANNEL(language) and plays ``firstline/<name>``, then reports
PLAYBACKSTATUS in a UserEvent. Asterisk's own log must show the playback and no missing
file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from acd.ami import AmiClient, Event
from acd.config import load_config
from ivr.prompts import install_for_config, install_prompts, prompt_name
from tests.conftest import LivePbx
from tests.live.harness import LIVE_CONFIG, TEST_SECRET, pbx_sounds, render_live

pytestmark = pytest.mark.live

PLAYER = """
; Written by tests/live/test_prompts_live.py: plays firstline/${PROMPT} in ${PROMPT_LANGUAGE}.
[firstline-prompt-player]
exten => play,1,Answer()
 same => n,Set(CHANNEL(language)=${PROMPT_LANGUAGE})
 same => n,Playback(firstline/${PROMPT})
 same => n,Set(SPOKEN=${CHANNEL(language)})
 same => n,UserEvent(FirstlinePrompt,Tag: ${TAG},Language: ${SPOKEN},Status: ${PLAYBACKSTATUS})
 same => n,Hangup()
"""
MISSING = ("does not exist", "Unable to open")


@pytest.fixture(scope="module")
def player_pbx(pbx: LivePbx, tmp_path_factory: pytest.TempPathFactory) -> LivePbx:
    conf = render_live(tmp_path_factory.mktemp("asterisk-conf"))
    local = conf / "extensions_local.conf"
    local.write_text(local.read_text() + PLAYER)
    pbx.start(conf, fresh_state=True)
    return pbx


@pytest.fixture
async def ami(player_pbx: LivePbx) -> AsyncIterator[AmiClient]:
    client = AmiClient(
        host="127.0.0.1", port=5038, username="firstline", secret=TEST_SECRET, reconnect=False
    )
    runner = asyncio.create_task(client.run())
    await client.wait_logged_in(timeout=10)
    yield client
    runner.cancel()
    await client.close()


async def play(ami: AmiClient, prompt: str, language: str) -> Event:
    """Play ``firstline/<prompt>`` on a channel speaking ``language``; the UserEvent."""
    tag = uuid.uuid4().hex[:8]
    heard: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def watch(event: Event) -> None:
        mine = event.get("UserEvent") == "FirstlinePrompt" and event.get("Tag") == tag
        if mine and not heard.done():
            heard.set_result(event)

    unsubscribe = ami.subscribe("UserEvent", watch)
    try:
        result = await ami.action(
            "Originate",
            {
                "Channel": "Local/play@firstline-prompt-player",
                "Application": "Wait",
                "Data": "20",
                "Async": "true",
                "Variable": [f"PROMPT={prompt}", f"PROMPT_LANGUAGE={language}", f"TAG={tag}"],
            },
            timeout=5,
        )
        assert result.ok, result.response
        async with asyncio.timeout(20):
            return await heard
    finally:
        unsubscribe()


def playing(name: str, language: str) -> str:
    # Asterisk names the codec, not the file: our .wav is 8 kHz signed linear, "slin"
    # (a core sound would say "gsm").
    return f"Playing 'firstline/{name}.slin' (language '{language}')"


def wait_for_log(pbx: LivePbx, text: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = pbx.log_since_start()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"Asterisk's log has no {text!r}:\n{pbx.log_since_start()[-3000:]}")


async def test_asterisk_plays_english_and_french_prompts(
    ami: AmiClient, player_pbx: LivePbx
) -> None:
    english = await play(ami, "callback-offer-9", "en")
    french = await play(ami, "ticket-number-is", "fr")

    assert (english.get("Status"), english.get("Language")) == ("SUCCESS", "en")
    assert (french.get("Status"), french.get("Language")) == ("SUCCESS", "fr")
    wait_for_log(player_pbx, playing("callback-offer-9", "en"))
    log = wait_for_log(player_pbx, playing("ticket-number-is", "fr"))
    missing = [line for line in log.splitlines() if any(text in line for text in MISSING)]
    assert missing == []


async def test_french_callers_hear_the_french_folder(ami: AmiClient, player_pbx: LivePbx) -> None:
    """A prompt installed for French only plays for a French channel: Asterisk resolves
    ``firstline/<name>`` to ``<sounds>/fr/firstline/<name>.wav``, not an English fallback."""
    sounds = pbx_sounds()
    install_prompts(sounds, ["fr"], {"8", "9"})
    try:
        assert (sounds / "fr" / "firstline" / "callback-offer-8.wav").is_file()
        assert not (sounds / "en" / "firstline" / "callback-offer-8.wav").exists()

        french = await play(ami, prompt_name("callback-offer", "8"), "fr")

        assert french.get("Status") == "SUCCESS"
        log = wait_for_log(player_pbx, playing("callback-offer-8", "fr"))
        assert not [line for line in log.splitlines() if any(text in line for text in MISSING)]
    finally:
        report = install_for_config(load_config(LIVE_CONFIG), sounds)
        assert [path.name for path in report.removed] == ["callback-offer-8.wav"]


def test_installed_prompts_are_where_asterisk_looks(player_pbx: LivePbx) -> None:
    listing = player_pbx.cli("core show file formats")
    assert "wav" in listing.split()  # format_wav reads our 8 kHz 16-bit files
    for language in ("en", "fr"):
        folder = player_pbx.root / "usr/share/asterisk/sounds" / language / "firstline"
        assert (folder / "callback-offer-9.wav").is_file()
        assert (folder / "hotline-closed.wav").is_file()
