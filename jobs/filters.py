from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from .models import Dataset, Job


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts (a 500 otherwise)."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Enter a date-time between the years 1 and 9999.", code="invalid")


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)
    base_model = django_filters.CharFilter(field_name="base_model")
    trainer = django_filters.CharFilter(field_name="trainer__name")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = Job
        fields = ["status", "base_model", "trainer", "created_after", "created_before"]


class DatasetFilter(django_filters.FilterSet):
    task = django_filters.ChoiceFilter(choices=Dataset.Task.choices)
    # Not ``format``: DRF reads ``?format=`` as the renderer to answer with.
    record_format = django_filters.MultipleChoiceFilter(field_name="format", choices=Dataset.Format.choices)

    class Meta:
        model = Dataset
        fields = ["task", "record_format"]
