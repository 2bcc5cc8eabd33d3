"""FastAGI for Firstline: a sans-IO codec (`codec`) and the asyncio server (`server`).

Import the public names from here; the submodules' other names are private.  This package
must not know about routing or the daemon: handlers are injected by the composition root.
"""

from acd.agi.codec import (
    NEED_DATA,
    AgiConnection,
    AgiEvent,
    AgiHangupNotice,
    AgiProtocolError,
    AgiRequest,
    AgiResult,
    AgiUsageError,
    Closed,
    format_command,
)
from acd.agi.server import (
    AgiCommandError,
    AgiError,
    AgiHangup,
    AgiServer,
    AgiSession,
    AgiTimeout,
    Handler,
    RequestObserver,
)

__all__ = [
    "NEED_DATA",
    "AgiCommandError",
    "AgiConnection",
    "AgiError",
    "AgiEvent",
    "AgiHangup",
    "AgiHangupNotice",
    "AgiProtocolError",
    "AgiRequest",
    "AgiResult",
    "AgiServer",
    "AgiSession",
    "AgiTimeout",
    "AgiUsageError",
    "Closed",
    "Handler",
    "RequestObserver",
    "format_command",
]
