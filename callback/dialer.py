"""The callback dialer: keeps pending callbacks in their queues' lines and reports attempts.

Each tick it claims (from the store, with a lease) as many callbacks as each open, staffed
queue should hold (`callback.schedule.places_wanted`) and originates a *held place* per
claim: a Local channel whose ;2 half waits in `Queue()` at the caller's place, and whose ;1
half dials the customer once an agent has answered (dialplan `firstline-callback`). It
renews the leases of what it holds, gives back what ended without an agent, and records
each attempt's start and result. It owns no socket and no database: the composition root
passes the store (`CallbackRecords`) and an `originate` function. It never blocks a call.
"""

# Why a held place expires (place_refresh) and the lease outlives it: if this daemon dies,
# its held places leave the queue by themselves before its leases run out, so the daemon
# that takes the claims over can never put a second place for the same ticket in line.

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from acd.config import Config
from acd.state import HELD_PLACE_PREFIX, StateSnapshot
from callback.schedule import HeldPlace, max_penalty_after, place_position, places_wanted, retry_at

__all__ = ["TALK_LEASE", "CallbackDialer", "CallbackRecords", "ClaimedCallback", "HeldCall"]

# Dial statuses (Asterisk's DIALSTATUS) -> attempt outcome.
_OUTCOMES: Mapping[str, str] = {
    "ANSWER": "answered",
    "BUSY": "busy",
    "NOANSWER": "no_answer",
}
# A talk can be long: the lease covers it once the customer is dialled.
TALK_LEASE = dt.timedelta(hours=2)


class ClaimedCallback(Protocol):
    """What the dialer reads of a claimed callback (acd.tickets.Callback fits)."""

    @property
    def id(self) -> int: ...
    @property
    def ticket_number(self) -> str: ...
    @property
    def number(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def queue_joined_at(self) -> dt.datetime: ...
    @property
    def priority(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at(self) -> dt.datetime: ...


class CallbackRecords(Protocol):
    """The store operations the dialer needs (acd.tickets.CallbackStore fits)."""

    async def claim(
        self,
        *,
        now: dt.datetime,
        owner: str,
        lease: dt.timedelta,
        queues: Sequence[str] | None = None,
        limit: int = 1,
    ) -> Sequence[ClaimedCallback]: ...

    async def renew(
        self, callback_id: int, *, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> None: ...

    async def release(self, callback_id: int, *, owner: str, now: dt.datetime) -> None: ...

    async def start_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        agent: str | None,
        uniqueid: str | None,
        lease: dt.timedelta,
    ) -> int: ...

    async def finish_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        outcome: Any,
        retry_at: dt.datetime | None,
        agent: str | None = None,
    ) -> Any: ...

    async def get(self, callback_id: int) -> ClaimedCallback: ...


@dataclass(slots=True)
class HeldCall:
    """One held place (and, once an agent answered, the attempt) of this dialer."""

    callback: ClaimedCallback
    channel_id: str
    placed_at: dt.datetime
    agent: str | None = None
    dialling: bool = False

    @property
    def queue_uniqueid(self) -> str:
        """The Uniqueid app_queue reports for the held place (the Local channel's ;2)."""
        return f"{self.channel_id};2"


Originate = Callable[[Mapping[str, str | Sequence[str]]], Awaitable[bool]]


class CallbackDialer:
    """Holds callbacks' places in line and reports their attempts (see the module doc)."""

    def __init__(
        self,
        config: Config,
        records: CallbackRecords,
        originate: Originate,
        *,
        owner: str,
    ) -> None:
        self._config = config
        self._records = records
        self._originate = originate
        self._owner = owner
        self._held: dict[str, HeldCall] = {}  # channel id -> held place
        self._log = structlog.get_logger("callback.dialer")

    @property
    def owner(self) -> str:
        return self._owner

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def held(self) -> dict[str, HeldCall]:
        """Held places and running attempts by the Uniqueid of the place in the queue."""
        return {held.queue_uniqueid: held for held in self._held.values()}

    def _lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self._config.callback.place_refresh + 60)

    async def step(
        self, now: dt.datetime, snapshot: StateSnapshot, open_queues: Sequence[str]
    ) -> None:
        """One round: renew what is held, then hold more where agents could take them."""
        for held in list(self._held.values()):
            lease = TALK_LEASE if held.dialling else self._lease()
            try:
                await self._records.renew(held.callback.id, owner=self._owner, now=now, lease=lease)
            except LookupError:
                self._held.pop(held.channel_id, None)
            except Exception as error:
                self._log.warning(
                    "callback.lease_lost", callback=held.callback.id, error=str(error)
                )
                self._held.pop(held.channel_id, None)
        per_queue: dict[str, int] = {}
        for held in self._held.values():
            if not held.dialling:
                per_queue[held.callback.queue] = per_queue.get(held.callback.queue, 0) + 1
        wanted = places_wanted(self._config, snapshot, open_queues, per_queue)
        for queue_id, count in sorted(wanted.items()):
            claimed = await self._records.claim(
                now=now, owner=self._owner, lease=self._lease(), queues=[queue_id], limit=count
            )
            for callback in claimed:
                await self._place(callback, now, snapshot)

    async def _place(
        self, callback: ClaimedCallback, now: dt.datetime, snapshot: StateSnapshot
    ) -> None:
        queue = self._config.queue(callback.queue)
        joined = callback.queue_joined_at.timestamp()
        view = snapshot.queues.get(queue.id)
        places = {
            held.queue_uniqueid: HeldPlace(
                held.queue_uniqueid,
                held.callback.priority,
                held.callback.queue_joined_at.timestamp(),
            )
            for held in self._held.values()
        }
        position = place_position(callback.priority, joined, view.waiting if view else (), places)
        channel_id = f"{HELD_PLACE_PREFIX}{callback.id}-{uuid.uuid4().hex[:12]}"
        refresh = self._config.callback.place_refresh
        variables = {
            "FIRSTLINE_CB_ID": str(callback.id),
            "FIRSTLINE_CB_QUEUE": queue.id,
            "FIRSTLINE_CB_PRIO": str(callback.priority),
            "FIRSTLINE_CB_MAX_PENALTY": str(
                max_penalty_after(queue, now.timestamp() - joined, default=0)
            ),
            "FIRSTLINE_CB_RULE": "firstline-held",
            "FIRSTLINE_CB_POSITION": str(position),
            "FIRSTLINE_CB_WAIT": str(refresh),
            "FIRSTLINE_CB_TICKET": callback.ticket_number,
        }
        fields: dict[str, str | list[str]] = {
            "Channel": "Local/hold@firstline-callback/n",
            "Context": "firstline-callback",
            "Exten": "customer",
            "Priority": "1",
            "Async": "true",
            "ChannelId": channel_id,
            # Until an agent answers the held place: its whole wait plus the agent's ring.
            "Timeout": str((refresh + queue.ring_timeout + 30) * 1000),
            "CallerID": f'"Callback {callback.ticket_number}" <{callback.number}>',
            # Inherited by both halves of the Local channel.
            "Variable": [f"__{name}={value}" for name, value in variables.items()],
        }
        held = HeldCall(callback, channel_id, now)
        self._held[channel_id] = held
        try:
            ok = await self._originate(fields)
        except Exception as error:  # one bad originate must not strand the round's claims
            self._log.warning("callback.originate_failed", callback=callback.id, error=repr(error))
            ok = False
        if not ok:
            self._held.pop(channel_id, None)
            await self._release(callback.id, now, "originate refused")
        else:
            self._log.info(
                "callback.place_held",
                callback=callback.id,
                ticket=callback.ticket_number,
                queue=queue.id,
                position=position,
                channel=channel_id,
            )

    async def _release(self, callback_id: int, now: dt.datetime, why: str) -> None:
        try:
            await self._records.release(callback_id, owner=self._owner, now=now)
        except Exception as error:
            self._log.warning("callback.release_failed", callback=callback_id, error=str(error))
        self._log.info("callback.place_released", callback=callback_id, reason=why)

    async def originate_ended(self, channel_id: str, ok: bool, now: dt.datetime) -> None:
        """Asterisk's OriginateResponse for a held place.

        Success means an agent answered (the ;1 half now dials the customer). Failure means
        the place left the line without an agent (its wait ran out, or the queue refused):
        the callback is given back, and the next round holds it again at its place.
        """
        held = self._held.get(channel_id)
        if held is None or ok:
            return
        if held.dialling:
            return
        del self._held[channel_id]
        await self._release(held.callback.id, now, "place ended without an agent")

    async def agent_answered(
        self, channel_id: str, callback_id: int, agent: str | None, now: dt.datetime
    ) -> tuple[ClaimedCallback, str] | None:
        """An agent took the held place: start the attempt; returns what to dial, or None.

        Works after a restart too (the place is then unknown here but the claim is ours).
        """
        held = self._held.get(channel_id)
        try:
            await self._records.start_attempt(
                callback_id,
                owner=self._owner,
                now=now,
                agent=agent,
                uniqueid=channel_id,
                lease=TALK_LEASE,
            )
            callback = held.callback if held else await self._records.get(callback_id)
        except Exception as error:
            self._log.warning("callback.not_ours", callback=callback_id, error=str(error))
            self._held.pop(channel_id, None)
            return None
        if held is None:
            held = HeldCall(callback, channel_id, now)
            self._held[channel_id] = held
        held.agent = agent
        held.dialling = True
        dial = (self._config.callback.dial or "").replace("{number}", callback.number)
        self._log.info(
            "callback.dialling",
            callback=callback_id,
            ticket=callback.ticket_number,
            agent=agent,
            attempt=callback.attempts + 1,
        )
        return callback, dial

    async def attempt_ended(
        self, channel_id: str, callback_id: int, dial_status: str, now: dt.datetime
    ) -> tuple[str, ClaimedCallback | None]:
        """The customer's leg ended with Asterisk's DIALSTATUS; returns the outcome recorded."""
        held = self._held.pop(channel_id, None)
        outcome = _OUTCOMES.get(dial_status.upper(), "failed")
        attempts = (held.callback.attempts if held else 0) + 1
        if held is None:
            try:
                attempts = (await self._records.get(callback_id)).attempts + 1
            except Exception:
                attempts = 1
        again = None if outcome == "answered" else retry_at(self._config.callback, attempts, now)
        try:
            await self._records.finish_attempt(
                callback_id,
                owner=self._owner,
                now=now,
                outcome=outcome,
                retry_at=again,
                agent=held.agent if held else None,
            )
        except Exception as error:
            self._log.error("callback.result_lost", callback=callback_id, error=str(error))
            return outcome, None
        self._log.info(
            "callback.attempt_ended",
            callback=callback_id,
            outcome=outcome,
            dial_status=dial_status,
            retry_at=again.isoformat() if again else None,
        )
        return outcome, held.callback if held else None
