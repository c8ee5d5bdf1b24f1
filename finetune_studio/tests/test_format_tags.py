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
