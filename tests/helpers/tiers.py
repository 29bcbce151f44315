"""Long parametrized tests: the fast tier (`make test-fast`) keeps one case of each kind."""

from collections.abc import Callable, Iterable
from typing import Any

import pytest


def one_of_each_kind(
    cases: Iterable[Any], kind: Callable[[Any], object] = lambda case: None
) -> list[Any]:
    """`cases` as `pytest.param`s: the first of each `kind(case)` unmarked, the others `slow`."""
    seen: set[object] = set()
    params = []
    for case in cases:
        marks = pytest.mark.slow if kind(case) in seen else ()
        seen.add(kind(case))
        params.append(pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=marks))
    return params
