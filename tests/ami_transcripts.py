"""The recorded AMI session of a queue's life (tests/transcripts/ami/state_queue_life.bin),
split into broadcast events with their time and the QueueStatus + CoreShowChannels answers
(the resyncs) in between. Shared by the live-state and metrics tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from acd.ami.codec import NEED_DATA, AmiParser, Closed, Event

STATE_TRANSCRIPT = Path(__file__).parent / "transcripts" / "ami" / "state_queue_life.bin"


@dataclass
class Resync:
    """One QueueStatus + CoreShowChannels answer, and the time just before it."""

    now: float
    queue_status: list[Event] = field(default_factory=list)
    channels: list[Event] = field(default_factory=list)


@dataclass
class Transcript:
    steps: list[tuple[Event, float] | Resync]

    @property
    def broadcast(self) -> list[tuple[Event, float]]:
        return [s for s in self.steps if not isinstance(s, Resync)]

    @property
    def resyncs(self) -> list[Resync]:
        return [s for s in self.steps if isinstance(s, Resync)]


def load_state_transcript(path: Path = STATE_TRANSCRIPT) -> Transcript:
    parser = AmiParser()
    parser.receive_data(path.read_bytes())
    parser.receive_data(b"")
    steps: list[tuple[Event, float] | Resync] = []
    now = 0.0
    pending: Resync | None = None
    while True:
        message = parser.next_message()
        if message is NEED_DATA or isinstance(message, Closed):
            break
        if not isinstance(message, Event):
            continue
        # events of an action's list carry no Timestamp: they belong to "now"
        stamp = message.get("Timestamp")
        if stamp is not None:
            now = float(stamp)
        if message.get("ActionID") is None:
            steps.append((message, now))
            continue
        if pending is None:
            pending = Resync(now)
            steps.append(pending)
        if message.name.startswith("Queue"):
            if message.name != "QueueStatusComplete":
                pending.queue_status.append(message)
        elif message.name == "CoreShowChannel":
            pending.channels.append(message)
        elif message.name == "CoreShowChannelsComplete":
            pending = None
    return Transcript(steps)
