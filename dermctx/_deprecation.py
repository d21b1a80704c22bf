"""Old parameter and attribute names kept working for a deprecation period.

dermctx follows scikit-learn's names (``random_state``, ``n_jobs``, a loader's first argument
``path``). Where a public name changed, the old one is still accepted and emits a
:class:`FutureWarning` naming the new one (``"seed= is deprecated, use random_state="``); it will
be removed in a later release.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

__all__ = ["renamed_kwargs", "renamed_parameters", "warn_renamed"]

P = ParamSpec("P")
R = TypeVar("R")


def warn_renamed(who: str, old: str, new: str, *, stacklevel: int = 3, kind: str = "=") -> None:
    """Emit the FutureWarning ``"<who>: <old>= is deprecated, use <new>="``.

    ``kind`` is what follows each name: ``"="`` for a parameter, ``""`` for an attribute or a
    module-level name.
    """
    warnings.warn(
        f"{who}: {old}{kind} is deprecated, use {new}{kind} ({old}{kind} will be removed in a "
        "future release)",
        FutureWarning,
        stacklevel=stacklevel,
    )


def renamed_kwargs(who: str, kwargs: dict[str, Any], renames: Mapping[str, str], *,
                   strict: bool = False, stacklevel: int = 4) -> dict[str, Any]:
    """Move deprecated keywords out of ``kwargs`` under their new names, warning for each.

    Parameters
    ----------
    who : str
        The function or class, named in the messages.
    kwargs : dict
        The keyword arguments to translate (modified in place: the old names are removed).
    renames : mapping old -> new
        The deprecated names and what replaced them.
    strict : bool
        ``kwargs`` is a ``**kwargs`` catch-all: any other keyword left in it is a TypeError, as
        Python raises for an unknown keyword.
    stacklevel : int
        Of the warning, counted from :func:`warn_renamed`; 4 points at the caller of the
        function that calls this one.

    Returns
    -------
    dict
        ``{new: value}`` for each old name found.

    Raises
    ------
    TypeError
        An old and its new name both in ``kwargs``, or (``strict``) a keyword that is neither.
    """
    out: dict[str, Any] = {}
    for old, new in renames.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if new in kwargs:
            raise TypeError(f"{who}: got both {old}= and {new}=; {old}= is deprecated, pass "
                            f"{new}= only")
        warn_renamed(who, old, new, stacklevel=stacklevel)
        out[new] = value
    if strict and kwargs:
        raise TypeError(f"{who}: got an unexpected keyword argument {sorted(kwargs)[0]!r}")
    return out


def renamed_parameters(**renames: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: accept each ``old=`` keyword as ``new=`` with a FutureWarning.

    ``@renamed_parameters(seed="random_state")`` keeps ``f(..., seed=1)`` working as
    ``f(..., random_state=1)``. Positional calls are unchanged; passing both names is a
    TypeError. The signature (``inspect.signature``, ``help``) shows the new names only.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        who = getattr(func, "__qualname__", getattr(func, "__name__", "function"))

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if kwargs and not renames.keys().isdisjoint(kwargs):
                kwargs.update(renamed_kwargs(who, kwargs, renames))
            return func(*args, **kwargs)

        return wrapper

    return decorate
