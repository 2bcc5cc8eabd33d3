"""Secret references: where a secret lives, never the secret itself.

A ``SecretRef`` names an environment variable or a file (relative to the config file's
folder). The YAML never holds a literal secret, so the config can be reviewed, committed and
pasted into a ticket. Reading happens only through ``reveal()``, at render or connect time.
This module must not log or cache secret values.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

__all__ = ["BASE_DIR_CONTEXT", "SecretRef", "SecretUnavailableError"]

#: Validation-context key under which the loader passes the config file's folder.
BASE_DIR_CONTEXT = "firstline_config_dir"

_NO_LITERALS = (
    "secrets never live in the YAML: use {env: VARIABLE} or {file: path/to/secret} instead"
)


class SecretUnavailableError(Exception):
    """A referenced secret cannot be read (missing, empty or unsafe); the message says why."""


class SecretRef(BaseModel):
    """Exactly one of ``env`` or ``file``: the place a secret is read from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the secret.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    file: str | None = Field(
        default=None,
        description=(
            "Path of a file holding the secret (trailing newline stripped), relative to the "
            "config file's folder. It must not be readable by group or others."
        ),
        min_length=1,
    )
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            raise ValueError(_NO_LITERALS)  # noqa: TRY004 - pydantic wants ValueError
        return data

    @model_validator(mode="after")
    def _exactly_one(self, info: ValidationInfo) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference needs exactly one of 'env' or 'file'")
        # The loader passes the config file's folder; relative files resolve against it.
        context = info.context
        if isinstance(context, dict) and isinstance(context.get(BASE_DIR_CONTEXT), Path):
            self._base_dir = context[BASE_DIR_CONTEXT]
        return self

    @property
    def path(self) -> Path | None:
        """The absolute file path for a ``file`` reference, else None."""
        if self.file is None:
            return None
        return self._base_dir / self.file

    def describe(self) -> str:
        """Where the secret lives, for messages (never the value)."""
        return f"environment variable {self.env}" if self.env is not None else f"file {self.path}"

    def reveal(self) -> str:
        """Read the secret; raise ``SecretUnavailableError`` with a clear reason if it cannot be."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailableError(f"environment variable {self.env} is not set")
            if not value:
                raise SecretUnavailableError(f"environment variable {self.env} is empty")
            return value
        path = self.path
        assert path is not None  # _exactly_one guarantees env or file
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise SecretUnavailableError(f"secret file {path} does not exist") from None
        except OSError as exc:
            raise SecretUnavailableError(f"secret file {path} cannot be read: {exc}") from None
        if not stat.S_ISREG(mode):
            raise SecretUnavailableError(f"secret file {path} is not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretUnavailableError(
                f"secret file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretUnavailableError(f"secret file {path} cannot be read: {exc}") from None
        if not value:
            raise SecretUnavailableError(f"secret file {path} is empty")
        return value

    def create_if_missing(self) -> Path | None:
        """Create a missing ``file`` secret with a random token (mode 0600); return its path."""
        path = self.path
        if path is None or path.exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_EXCL: never overwrite a secret someone created meanwhile.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
        return path
