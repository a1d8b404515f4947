import pytest

from labelling.services.consensus import decide


@pytest.mark.parametrize(
    ("labels", "overlap", "expected"),
    [
        ([], 1, ("none", None)),
        ([7], 1, ("agreed", 7)),
        ([7], 3, ("pending", 7)),
        ([7, 8], 3, ("pending", None)),
        ([7, 7, 8], 3, ("majority", 7)),
        ([7, 8], 2, ("disputed", None)),
        ([7, 7], 2, ("agreed", 7)),
    ],
)
def test_decide(labels, overlap, expected):
    assert decide(labels, overlap=overlap) == expected


def test_adjudication_wins_over_majority():
    assert decide([7, 7, 8], overlap=3, adjudication=(8, False)) == ("adjudicated", 8)
    assert decide([], overlap=1, adjudication=(8, True)) == ("gold", 8)
