"""Query filters of evaluations (the API's ``?status=`` and ``?model=``)."""

import django_filters

from .models import Evaluation


class EvaluationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Evaluation.Status.choices)
    model = django_filters.NumberFilter(field_name="model_id")

    class Meta:
        model = Evaluation
        fields = ["status", "model"]
