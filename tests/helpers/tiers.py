"""Long parametrized tests (their cases together take more than ~2 s): the fast tier (`make
test-fast`) keeps one case of each kind, the full suite runs them all."""

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
        marks = pytest.mark.slow if kind(case) in seen else ()
        seen.add(kind(case))
        params.append(pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=marks))
    return params
