from datetime import UTC, datetime

import pytest

from logs_app.parsing import format_line, metric_point, normalize_level, parse_text_line, parse_timestamp


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("debug", "DEBUG"),
        ("TRACE", "DEBUG"),
        ("info", "INFO"),
        ("Notice", "INFO"),
        ("WARNING", "WARN"),
        ("warn", "WARN"),
        ("CRITICAL", "ERROR"),
        ("FATAL", "ERROR"),
        ("severe", "ERROR"),
        ("err", "ERROR"),
        (30, "WARN"),
        (50, "ERROR"),
        (10, "DEBUG"),
    ],
)
def test_it_maps_level_names_onto_four_levels(raw, level):
    assert normalize_level(raw) == level


def test_it_leaves_unknown_levels_to_the_caller():
    assert normalize_level("LOUD") is None
    assert normalize_level(True) is None
    assert normalize_level("LOUD", default="INFO") == "INFO"


def test_it_reads_the_seed_text_form_and_writes_it_back(settings):
    settings.TIME_ZONE = "UTC"
    now = datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
    parsed = parse_text_line("[14:03:07] [WARNING] loss went up", now=now)
    assert (parsed.level, parsed.message) == ("WARN", "loss went up")
    assert parsed.timestamp == datetime(2024, 5, 1, 14, 3, 7, tzinfo=UTC)
    assert format_line(parsed.timestamp, parsed.level, parsed.message) == "[14:03:07] [WARN] loss went up"


def test_a_clock_time_later_than_now_belongs_to_yesterday(settings):
    settings.TIME_ZONE = "UTC"
    now = datetime(2024, 5, 1, 0, 5, tzinfo=UTC)
    assert parse_text_line("[23:59:00] [INFO] x", now=now).timestamp == datetime(2024, 4, 30, 23, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "level", "message"),
    [
        ("[2024-05-01 12:00:01,123] [CRITICAL] out of memory", "ERROR", "out of memory"),
        ("2024-05-01T12:00:01Z ERROR disk full", "ERROR", "disk full"),
        ("[ERROR] boom", "ERROR", "boom"),
        ("WARNING: low disk", "WARN", "low disk"),
        ("WARNING:transformers.trainer:slow step", "WARN", "WARNING:transformers.trainer:slow step"),
        (
            "2024-05-01 12:00:01,123 - trainer - DEBUG - batch 3",
            "DEBUG",
            "2024-05-01 12:00:01,123 - trainer - DEBUG - batch 3",
        ),
        ('time=1 level=warn msg="slow"', "WARN", 'time=1 level=warn msg="slow"'),
        ("epoch 1 done", None, "epoch 1 done"),
        ("an error occurred in step 3", None, "an error occurred in step 3"),
    ],
)
def test_it_recognises_common_line_forms(text, level, message):
    parsed = parse_text_line(text)
    assert (parsed.level, parsed.message) == (level, message)


def test_it_reads_client_timestamps_and_refuses_nonsense():
    assert parse_timestamp("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_timestamp(0) == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("yesterday")
    with pytest.raises(ValueError):
        parse_timestamp(True)


def test_it_finds_metrics_in_json_lines_only():
    assert metric_point('{"step": 3, "loss": 1.5}') == {"step": 3, "loss": 1.5}
    assert metric_point('{"epoch": 1}') == {"epoch": 1}
    assert metric_point('{"note": "hi"}') is None
    assert metric_point("step 3 loss 1.5") is None
    assert metric_point("{not json}") is None
