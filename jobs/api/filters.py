import django_filters

from ..models import Job


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)
    base_model = django_filters.CharFilter(field_name="base_model")
    trainer = django_filters.CharFilter(field_name="trainer__name")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = Job
        fields = ["status", "base_model", "trainer", "created_after", "created_before"]
