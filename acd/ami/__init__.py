"""Firstline's Asterisk Manager Interface link: a sans-IO codec and an asyncio client.

Import from here, not from the private-by-convention submodules; nothing else of ours is
imported by this package.
"""

from acd.ami.client import (
    ActionResult,
    AmiActionError,
    AmiAuthenticationError,
    AmiClient,
    AmiConnectionError,
    AmiDisconnected,
    AmiTimeout,
    EventCallback,
)
from acd.ami.codec import (
    NEED_DATA,
    AmiError,
    AmiFormatError,
    AmiParser,
    AmiProtocolError,
    Banner,
    Closed,
    Event,
    Fields,
    Message,
    NeedData,
    ParserOutput,
    Response,
    format_action,
)

__all__ = [
    "NEED_DATA",
    "ActionResult",
    "AmiActionError",
    "AmiAuthenticationError",
    "AmiClient",
    "AmiConnectionError",
    "AmiDisconnected",
    "AmiError",
    "AmiFormatError",
    "AmiParser",
    "AmiProtocolError",
    "AmiTimeout",
    "Banner",
    "Closed",
    "Event",
    "EventCallback",
    "Fields",
    "Message",
    "NeedData",
    "ParserOutput",
    "Response",
    "format_action",
]
