import pytest

from hlop.loop.metrics import average_accuracy, backward_transfer, forgetting, format_matrix

# accuracy after training task i (rows) on task j (columns), by hand
A = [
    [90.0],
    [80.0, 95.0],
    [70.0, 85.0, 99.0],
]


def test_acc_bwt_forgetting_by_hand():
    assert average_accuracy(A) == pytest.approx((70 + 85 + 99) / 3)
    assert backward_transfer(A) == pytest.approx(((70 - 90) + (85 - 95)) / 2)
    assert forgetting(A) == pytest.approx([90 - 70, 95 - 85])


def test_forgetting_uses_best_earlier_accuracy_not_first():
    a = [[50.0], [60.0, 80.0], [40.0, 80.0, 90.0], [45.0, 70.0, 88.0, 91.0]]
    assert forgetting(a) == pytest.approx([60 - 45, 80 - 70, 90 - 88])
    assert backward_transfer(a) == pytest.approx(((45 - 50) + (70 - 80) + (88 - 90)) / 3)


def test_partial_matrix_and_single_task():
    assert average_accuracy(A[:2]) == pytest.approx(87.5)
    assert backward_transfer(A[:1]) == 0.0 and forgetting(A[:1]) == []
    # square matrices with future columns filled (e.g. zeros) read the same
    square = [[90.0, 0.0, 0.0], [80.0, 95.0, 0.0], [70.0, 85.0, 99.0]]
    assert average_accuracy(square) == average_accuracy(A)
    assert backward_transfer(square) == backward_transfer(A)


def test_bad_matrix():
    with pytest.raises(ValueError, match="no rows"):
        average_accuracy([])
    with pytest.raises(ValueError, match="row 1"):
        backward_transfer([[1.0], [2.0]])


def test_format():
    text = format_matrix(A)
    assert "T2" in text and "99.00" in text and len(text.splitlines()) == 4
