from django.conf import settings
from rest_framework import serializers

from ..parsing import normalize_level


class LogHistoryQuerySerializer(serializers.Serializer):
    """Query of the JSON history: keyset by seq (``after`` forward, ``before`` backward), filters."""

    after = serializers.IntegerField(min_value=0, default=0)
    before = serializers.IntegerField(min_value=1, required=False)
    limit = serializers.IntegerField(min_value=1, required=False)
    level = serializers.CharField(required=False, allow_blank=True, max_length=100)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    q = serializers.CharField(required=False, allow_blank=True, max_length=500, trim_whitespace=False)

    def validate_limit(self, value: int) -> int:
        if value > settings.LOG_HISTORY_MAX_LIMIT:
            raise serializers.ValidationError(f"at most {settings.LOG_HISTORY_MAX_LIMIT}")
        return value

    def validate_level(self, value: str) -> tuple[str, ...]:
        levels = []
        for raw in filter(None, (part.strip() for part in value.split(","))):
            level = normalize_level(raw)
            if level is None:
                raise serializers.ValidationError(f"unknown level {raw!r} (use DEBUG, INFO, WARN or ERROR)")
            levels.append(level)
        return tuple(dict.fromkeys(levels))

    def validate(self, attrs: dict) -> dict:
        if attrs.get("since") and attrs.get("until") and attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"until": ["must not be before since"]})
        return attrs


class LogLineSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    level = serializers.CharField()
    message = serializers.CharField()
    source = serializers.CharField()


class LogAppendResultSerializer(serializers.Serializer):
    received = serializers.IntegerField(help_text="Lines in the request.")
    inserted = serializers.IntegerField(help_text="Lines stored now (lines with an already stored seq are skipped).")
    last_seq = serializers.IntegerField(help_text="The job's highest seq after this request.")
