"""Firstline's engine: the PBX link (AMI, FastAGI), configuration, daemon and CLI.

The protocol codecs (``acd.ami.codec``, ``acd.agi.codec``) import nothing of ours and do no
I/O; the asyncio adapters beside them own sockets, timeouts and reconnects. The daemon
(``acd.daemon``) is the one place that wires the parts together; nothing imports it.
"""
