import pytest

from finetune_studio.format_tags import delta_class, duration, signed_percent_points


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (200, "3 min 20 s"), (180, "3 min"), (7500, "2 h 5 min"), (None, "—"), (-1, "—")],
)
def test_durations_read_like_a_person_would_say_them(seconds, text):
    assert duration(seconds) == text


def test_deltas_are_signed_points_with_a_direction():
    assert signed_percent_points(0.123) == "+12.3 pts"
    assert signed_percent_points(-0.05) == "-5.0 pts"
    assert (delta_class(0.1), delta_class(-0.1), delta_class(0.0), delta_class(None)) == ("up", "down", "flat", "flat")


def test_metric_keys_read_as_words():
    from finetune_studio.format_tags import metric_label

    assert metric_label("eval_accuracy") == "Eval accuracy"
    assert metric_label("loss") == "Loss"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (41331.3, "41,331.3"),
        (5.49473, "5.4947"),
        (5.887, "5.887"),
        (243300, "243,300"),
        (1.0, "1"),
        (0.02, "0.02"),
        (0.00002, "2.00e-05"),
        (True, "True"),
        ("cuda", "cuda"),
        (None, "—"),
    ],
)
def test_metric_values_read_without_trailing_zeros_and_with_thousands_grouped(value, text):
    from finetune_studio.format_tags import metric_value

    assert metric_value(value) == text
