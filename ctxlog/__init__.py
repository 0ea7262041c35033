"""ctxlog: the right correlation fields on every log line.

``import ctxlog`` loads the standard library only.  Integrations live in their
own modules (``ctxlog.structlog``, ``ctxlog.asgi``, ``ctxlog.wsgi``, ...) and
import their library only there.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ctxlog._context import (
    Token,
    aisolate,
    annotate,
    bind,
    cache_scope,
    clear,
    current,
    get,
    isolate,
    register,
    reset,
    scope,
    set,  # noqa: A004 -- the public name of the API
    unbind,
    unregister,
)
from ctxlog._errors import ContextError
from ctxlog._handoff import Thread, ThreadPoolExecutor, wrap
from ctxlog._memo import memoize
from ctxlog._snapshot import Snapshot, snapshot
from ctxlog.headers import outgoing_headers
from ctxlog.stdlib import (
    ContextFilter,
    configure,
    install_record_factory,
    uninstall_record_factory,
)

if TYPE_CHECKING:
    from ctxlog._asyncio import asyncio_exception_handler, install_asyncio_handler
    from ctxlog._configs import load_config

    if sys.version_info >= (3, 14):
        from ctxlog._interpreters import InterpreterPoolExecutor
    from ctxlog._process import ProcessPoolExecutor
    from ctxlog._queue import QueueHandler

__version__ = "0.1.0.dev0"

# Loaded on first use: they import multiprocessing / logging.handlers / asyncio /
# concurrent.interpreters (3.14+: before, using it raises ImportError saying so).
_LAZY = {
    "InterpreterPoolExecutor": "ctxlog._interpreters",
    "ProcessPoolExecutor": "ctxlog._process",
    "QueueHandler": "ctxlog._queue",
    "asyncio_exception_handler": "ctxlog._asyncio",
    "install_asyncio_handler": "ctxlog._asyncio",
    "load_config": "ctxlog._configs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'ctxlog' has no attribute {name!r}"
        raise AttributeError(msg)
    if name == "InterpreterPoolExecutor" and sys.version_info < (3, 14):
        msg = (
            "ctxlog.InterpreterPoolExecutor needs Python 3.14 or newer "
            "(concurrent.futures.InterpreterPoolExecutor is new in 3.14); this is Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}. ctxlog.ProcessPoolExecutor runs work "
            "in other interpreters on every version."
        )
        raise ImportError(msg, name="ctxlog")
    import importlib  # noqa: PLC0415 -- only on the first use of a lazy name

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The lazy names too, before their first use (completion, help()).
    return sorted({*globals(), *(name for name in _LAZY if name in __all__)})


__all__ = [
    "ContextError",
    "ContextFilter",
    "InterpreterPoolExecutor",
    "ProcessPoolExecutor",
    "QueueHandler",
    "Snapshot",
    "Thread",
    "ThreadPoolExecutor",
    "Token",
    "aisolate",
    "annotate",
    "asyncio_exception_handler",
    "bind",
    "cache_scope",
    "clear",
    "configure",
    "current",
    "get",
    "install_asyncio_handler",
    "install_record_factory",
    "isolate",
    "load_config",
    "memoize",
    "outgoing_headers",
    "register",
    "reset",
    "scope",
    "set",
    "snapshot",
    "unbind",
    "uninstall_record_factory",
    "unregister",
    "wrap",
]

if sys.version_info < (3, 14):  # concurrent.futures.InterpreterPoolExecutor is new in 3.14
    __all__.remove("InterpreterPoolExecutor")
