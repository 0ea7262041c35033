"""The ready logging configurations shipped in the package (``ctxlog/config/``).

``python -m ctxlog config NAME`` prints one (for ``uvicorn --log-config``,
gunicorn, Celery or Django settings to point at a file);
[`load_config`][ctxlog._configs.load_config] returns one as the dict ``logging.config.dictConfig``
takes.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ctxlog._errors import ContextError

__all__ = ["config_names", "config_text", "load_config"]


def config_names() -> list[str]:
    """The names of the shipped configuration files, sorted."""
    folder = resources.files("ctxlog") / "config"
    return sorted(
        entry.name for entry in folder.iterdir() if entry.name.endswith((".json", ".yaml"))
    )


def config_text(name: str) -> str:
    """The text of the shipped configuration file *name* (``logging-json.json``, ...).

    :raises ContextError: there is no such file; the message lists the names.
    """
    if name not in config_names():
        msg = f"No ready configuration {name!r}; choose one of: {', '.join(config_names())}."
        raise ContextError(msg)
    return (resources.files("ctxlog") / "config" / name).read_text(encoding="utf-8")


def load_config(name: str = "logging-json.json") -> dict[str, Any]:
    """Return a shipped configuration as a dict for `logging.config.dictConfig`.

    ``logging.config.dictConfig(ctxlog.load_config("logging-json.json"))`` sets
    up what ``configure()`` does; the files are listed in the docs, and by
    ``python -m ctxlog config --list``.  A ``.yaml`` file needs PyYAML.

    *New in version 0.1.0.*

    :raises ContextError: there is no such file.
    :raises ImportError: a ``.yaml`` file was asked for and PyYAML is missing.
    """
    text = config_text(name)
    if name.endswith(".json"):
        loaded = json.loads(text)
    else:
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 -- only for .yaml files
        except ImportError as exc:
            msg = f"load_config({name!r}) reads YAML with PyYAML: pip install pyyaml"
            raise ImportError(msg, name="yaml") from exc
        loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):  # pragma: no cover -- the shipped files are mappings
        msg = f"{name} does not hold a mapping"
        raise ContextError(msg)
    return loaded
