"""Bad vectors get INVALID_ARGUMENT naming the index: NaN, infinity, mixed dimensions, empty sets,
duplicate ids."""

from __future__ import annotations

import math

import pytest

from likeness.core.errors import InvalidArgument
from likeness.embedding.vectors import check_unique_ids, stack_vectors


@pytest.mark.parametrize(("rows", "message"), [
    ([], "items: is empty; at least 1 required"),
    ([[1.0, 2.0], [1.0, math.nan]], "items[1].vector: value nan at component 1 is not finite"),
    ([[math.inf, 2.0], [1.0, 0.0]], "items[0].vector: value inf at component 0 is not finite"),
    ([[1.0, 2.0], [1.0, 2.0, 3.0]], "items[1].vector: dimension 3 differs from items[0]'s 2"),
    ([[]], "items[0].vector: vector is empty"),
])
def test_bad_vectors(rows, message):
    with pytest.raises(InvalidArgument) as err:
        stack_vectors(rows, "items", subfield=".vector")
    assert err.value.message == message


def test_too_few_and_too_many():
    with pytest.raises(InvalidArgument, match="has 1 vectors; at least 2 required"):
        stack_vectors([[1.0]], "reference", min_count=2)
    with pytest.raises(InvalidArgument, match="over the limit of 2"):
        stack_vectors([[1.0]] * 3, "reference", max_count=2)


def test_duplicate_and_empty_ids():
    with pytest.raises(InvalidArgument, match=r"items\[2\].id: 'a' repeats items\[0\].id"):
        check_unique_ids(["a", "b", "a"], "items")
    with pytest.raises(InvalidArgument, match=r"items\[1\].id: is empty"):
        check_unique_ids(["a", ""], "items")
