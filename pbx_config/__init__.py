"""Renders the Asterisk configuration from Firstline's config model alone (no I/O but writing).

``render(config)`` returns file name -> content, deterministic; ``write_rendered`` writes
them atomically, secrets 0600. Nothing here talks to a running Asterisk.
"""

from pbx_config.render import HELD_PLACE_RULE, SECRET_FILES, RenderError, render, write_rendered

__all__ = ["HELD_PLACE_RULE", "SECRET_FILES", "RenderError", "render", "write_rendered"]
