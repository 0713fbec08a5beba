"""Plain decoded values (dicts, lists, ...) turned into the types a function declares."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

_PLAIN = (int, float, str, bytes, bool, type(None), Any, dict, list, tuple, object)


def converter(tp: Any) -> Callable[[Any], Any] | None:
    """A function turning a decoded value into `tp`, or None when the decoded value already is
    one (ints, strs, plain dicts and lists...)."""
    if tp is inspect.Parameter.empty or tp in _PLAIN:
        return None
    if tp is float:
        return lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if tp is bytes:
        return None
    if isinstance(tp, type) and hasattr(tp, "__weir_from_value__"):
        return tp.__weir_from_value__
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = [(f.name, converter(hints.get(f.name, Any))) for f in dataclasses.fields(tp)]

        def to_dataclass(v: Any) -> Any:
            if not isinstance(v, dict):
                return v
            kwargs = {}
            for name, conv in fields:
                if name in v:
                    kwargs[name] = conv(v[name]) if conv else v[name]
            return tp(**kwargs)

        return to_dataclass
    if isinstance(tp, type) and hasattr(tp, "model_validate"):
        return lambda v: tp.model_validate(v) if isinstance(v, dict) else v
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, typing.List, set, frozenset) and args:
        inner = converter(args[0])
        if inner is None and origin in (list, typing.List):
            return None
        make = origin if origin in (set, frozenset) else list
        return lambda v: make(inner(x) if inner else x for x in v) if isinstance(v, list) else v
    if origin in (tuple, typing.Tuple):
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            inner = converter(args[0]) if args else None
            return lambda v: tuple(inner(x) if inner else x for x in v) if isinstance(v, list) else v
        convs = [converter(a) for a in args]
        return lambda v: tuple((c(x) if c else x) for c, x in zip(convs, v)) if isinstance(v, list) else v
    if origin in (dict, typing.Dict) and len(args) == 2:
        kc, vc = converter(args[0]), converter(args[1])
        if kc is None and vc is None:
            return None
        return lambda v: {(kc(k) if kc else k): (vc(x) if vc else x) for k, x in v.items()} if isinstance(v, dict) else v
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        options = [a for a in args if a is not type(None)]
        convs = [c for c in (converter(a) for a in options) if c is not None]
        if not convs:
            return None
        if len(convs) == 1:
            c = convs[0]
            return lambda v: None if v is None else c(v)
        return None
    return None
