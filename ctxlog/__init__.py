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
from ctxlog._memo import memoize
from ctxlog.stdlib import (
    ContextFilter,
    configure,
    install_record_factory,
    uninstall_record_factory,
)

if TYPE_CHECKING:
    from ctxlog._asyncio import asyncio_exception_handler, install_asyncio_handler
    from ctxlog._configs import load_config
    from ctxlog._handoff import Thread, ThreadPoolExecutor, wrap
    from ctxlog._process import ProcessPoolExecutor
    from ctxlog._queue import QueueHandler
    from ctxlog._redact import (
        BEARER_TOKEN,
        CARD_NUMBER,
        DEFAULT_SENSITIVE_KEYS,
        JWT,
        Pattern,
        Redactor,
    )
    from ctxlog._sampling import TailSamplingHandler
    from ctxlog._snapshot import Snapshot, snapshot
    from ctxlog.headers import outgoing_headers

    if sys.version_info >= (3, 14):
        from ctxlog._interpreters import InterpreterPoolExecutor

__version__ = "0.1.0.dev0"

# Loaded on first use: what an application that only binds and logs never
# calls (threads and pools, snapshots and their codecs, headers, process pools,
# queue handlers, asyncio, redaction, sampling) stays off ``import ctxlog``;
# InterpreterPoolExecutor needs 3.14 (before, using it raises ImportError saying so).
_LAZY = {
    "InterpreterPoolExecutor": "ctxlog._interpreters",
    "Thread": "ctxlog._handoff",
    "ThreadPoolExecutor": "ctxlog._handoff",
    "wrap": "ctxlog._handoff",
    "Snapshot": "ctxlog._snapshot",
    "snapshot": "ctxlog._snapshot",
    "outgoing_headers": "ctxlog.headers",
    "ProcessPoolExecutor": "ctxlog._process",
    "QueueHandler": "ctxlog._queue",
    "asyncio_exception_handler": "ctxlog._asyncio",
    "install_asyncio_handler": "ctxlog._asyncio",
    "load_config": "ctxlog._configs",
    "BEARER_TOKEN": "ctxlog._redact",
    "CARD_NUMBER": "ctxlog._redact",
    "DEFAULT_SENSITIVE_KEYS": "ctxlog._redact",
    "JWT": "ctxlog._redact",
    "Pattern": "ctxlog._redact",
    "Redactor": "ctxlog._redact",
    "TailSamplingHandler": "ctxlog._sampling",
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


__all__ = [  # noqa: RUF022 -- plain sorted() order, as a test holds it (constants among classes)
    "BEARER_TOKEN",
    "CARD_NUMBER",
    "ContextError",
    "ContextFilter",
    "DEFAULT_SENSITIVE_KEYS",
    "InterpreterPoolExecutor",
    "JWT",
    "Pattern",
    "ProcessPoolExecutor",
    "QueueHandler",
    "Redactor",
    "Snapshot",
    "TailSamplingHandler",
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
