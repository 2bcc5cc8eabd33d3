"""Firstline's admin configuration: one YAML file, validated into an immutable model.

``load_config`` reads and checks the file and reports every problem with its file:line:col;
``SecretRef`` points at secrets (environment or 0600 file) without holding them.
"""

from acd.config.load import ConfigInvalid, ConfigIssue, init_missing_secret_files, load_config
from acd.config.model import Agent, CallbackDialing, Config, Queue, Site
from acd.config.secrets import SecretRef, SecretUnavailableError

__all__ = [
    "Agent",
    "CallbackDialing",
    "Config",
    "ConfigInvalid",
    "ConfigIssue",
    "Queue",
    "SecretRef",
    "SecretUnavailableError",
    "Site",
    "init_missing_secret_files",
    "load_config",
]
