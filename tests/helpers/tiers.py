"""The fast tier (`make test-fast`: `-m "not slow and not e2e"`) and the long parametrized
tests: their cases, run together, take more than ~2 s, so the fast tier keeps one case of each
kind and the full suite runs them all."""

from collections.abc import Callable, Iterable
from typing import Any

import pytest


def one_of_each_kind(
    cases: Iterable[Any], kind: Callable[[Any], object] = lambda case: None
) -> list[Any]:
    """`cases` as `pytest.param`s for `parametrize`: the first case of each `kind(case)` is
    left unmarked, for the fast tier; every other case is marked `slow`."""
    seen: set[object] = set()
    params = []
    for case in cases:
        values = case if isinstance(case, tuple) else (case,)
        first = kind(case) not in seen
        seen.add(kind(case))
        params.append(pytest.param(*values, marks=() if first else pytest.mark.slow))
    return params
