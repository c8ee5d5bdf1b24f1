"""The list's filters, shared by the API and the models page, so both accept and refuse the same values."""

from datetime import UTC, date, datetime, time, timedelta

import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.filters import OrderingFilter

from .models import RegisteredModel


class DateOrDateTimeField(forms.Field):
    """ISO date (a whole day) or ISO datetime; naive values are in the server's time zone."""

    default_error_messages = {"invalid": "Enter an ISO date (2025-01-31) or date-time (2025-01-31T12:00:00Z)."}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        value = str(value).strip()
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return self._whole_day(day)
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            aware = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
            # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts (a 500 otherwise).
            return aware.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")

    def _whole_day(self, day: date) -> date:
        """A date stands for a whole day: both of its ends must be instants the database holds (years 1-9999 in UTC).

        ``date_to=9999-12-31`` needs the start of the day after: a 500 (OverflowError) once.
        """
        try:
            _start_of(day).astimezone(UTC)
            _start_of(day + timedelta(days=1)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError(
                f"The whole day {day.isoformat()} does not fit the years 1 to 9999; give an earlier or later date, "
                "or a date-time.",
                code="out_of_range",
            ) from None
        return day


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class DateOrDateTimeFilter(django_filters.Filter):
    field_class = DateOrDateTimeField

    def __init__(self, *args, upper: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.upper = upper

    def filter(self, qs, value):
        if value is None:
            return qs
        if isinstance(value, datetime):
            lookup = "lte" if self.upper else "gte"
            return qs.filter(**{f"{self.field_name}__{lookup}": value})
        # A date means the whole day: date_to=2025-01-31 includes everything created on the 31st.
        if self.upper:
            return qs.filter(**{f"{self.field_name}__lt": _start_of(value + timedelta(days=1))})
        return qs.filter(**{f"{self.field_name}__gte": _start_of(value)})


class ModelFilter(django_filters.FilterSet):
    base_model = django_filters.CharFilter(field_name="base_model")
    status = django_filters.ChoiceFilter(choices=RegisteredModel.Status.choices)
    type = django_filters.ChoiceFilter(choices=RegisteredModel.Type.choices)
    job = django_filters.NumberFilter(field_name="job_id", min_value=1)
    date_from = DateOrDateTimeFilter(field_name="created_at")
    date_to = DateOrDateTimeFilter(field_name="created_at", upper=True)
    search = django_filters.CharFilter(method="filter_search", max_length=200)

    class Meta:
        model = RegisteredModel
        fields = ["base_model", "status", "type", "job", "date_from", "date_to", "search"]

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))


ORDERING_FIELDS = ("created_at", "updated_at", "name", "base_model", "status", "total_size", "id")


class StrictOrderingFilter(OrderingFilter):
    """Like DRF's, but an unknown field is a 400 naming it instead of being silently ignored; ties break on id."""

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if not params:
            return self.get_default_ordering(view)
        fields = [param.strip() for param in params.split(",") if param.strip()]
        invalid = [field for field in fields if field.lstrip("-") not in ORDERING_FIELDS]
        if invalid or not fields:
            raise serializers.ValidationError(
                {
                    self.ordering_param: [
                        f"Unknown ordering field {', '.join(invalid) or params!r}; use one of: "
                        f"{', '.join(ORDERING_FIELDS)} (prefix '-' for descending)."
                    ]
                }
            )
        if not any(field.lstrip("-") == "id" for field in fields):
            fields.append("-id")
        return fields
