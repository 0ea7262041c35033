"""ctxlog: the right correlation fields on every log line.

``import ctxlog`` loads the standard library only.  Integrations live in their
own modules (``ctxlog.structlog``, ``ctxlog.asgi``, ``ctxlog.wsgi``, ...) and
import their library only there.
"""

from __future__ import annotations

from ctxlog._context import (
    ContextError,
    Token,
    aisolate,
    bind,
    clear,
    current,
    get,
    isolate,
    register,
    reset,
    set,  # noqa: A004 -- the public name DESIGN.md fixes
    unbind,
    unregister,
)
from ctxlog.headers import outgoing_headers
from ctxlog.stdlib import (
    ContextFilter,
    configure,
    install_record_factory,
    uninstall_record_factory,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ContextError",
    "ContextFilter",
    "Token",
    "aisolate",
    "bind",
    "clear",
    "configure",
    "current",
    "get",
    "install_record_factory",
    "isolate",
    "outgoing_headers",
    "register",
    "reset",
    "set",
    "unbind",
    "uninstall_record_factory",
    "unregister",
]
