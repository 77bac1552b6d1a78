"""The hooks section of docs/PLUGINS.md, rendered from the hook specifications."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from osrbench import plugins


def hook_specs() -> list[tuple[str, Callable[..., Any]]]:
    """The hook specifications of ``osrbench.hookspecs``, in source order."""
    from osrbench import hookspecs

    marker = f"{plugins.GROUP}_spec"
    found = [(n, f) for n, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, marker)]
    return sorted(found, key=lambda nf: nf[1].__code__.co_firstlineno)


def _signature(fn: Callable[..., Any]) -> str:
    """``(register: Callable[[MethodSpec], None]) -> None`` from the (string) annotations."""
    sig = inspect.signature(fn)

    def text(annotation: Any) -> str:
        raw = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        return raw.replace('"', "").replace("'", "")

    params = ", ".join(p.name if p.annotation is p.empty else f"{p.name}: {text(p.annotation)}"
                       for p in sig.parameters.values())
    ret = "" if sig.return_annotation is sig.empty else f" -> {text(sig.return_annotation)}"
    return f"({params}){ret}"


def hook_reference() -> str:
    """The hooks section of docs/PLUGINS.md, rendered from the hookspec signatures and docstrings."""
    parts = []
    for name, fn in hook_specs():
        sig = _signature(fn)
        parts.append(f"### `{name}`\n\n```python\n@osrbench.hookimpl\ndef {name}{sig}:\n    ...\n```\n\n"
                     f"```text\n{inspect.getdoc(fn)}\n```\n")
    return "\n".join(parts)
