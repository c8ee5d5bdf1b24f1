import csv
import io
import json

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import OwnedQuerysetMixin
from finetune_studio.keys import download_filename

from .. import selectors, services
from ..filters import EvaluationFilter
from ..judge import named_no_winner
from ..models import Evaluation
from .serializers import (
    ChatUsageQuerySerializer,
    ChatUsageSerializer,
    EvaluateRequestSerializer,
    EvaluationListSerializer,
    EvaluationSerializer,
    EvaluationUpdateSerializer,
    ParityRequestSerializer,
)

EXPORT_FIELDS = [
    "index",
    "candidate",
    "role",
    "input",
    "expected",
    "prediction_text",
    "parsed_label",
    "correct",
    "latency_ms",
    "eval_count",
    "eval_duration_ns",
    "error",
]


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # Errors (404…) still reach clients that asked for CSV: as JSON text.
        return data if isinstance(data, (bytes, str)) else json.dumps(data)


# The body of every 202 that queues an evaluation (its schema, under each endpoint's own name).
ACCEPTED_FIELDS = {
    "evaluation_id": serializers.IntegerField(),
    "status": serializers.CharField(),
    "message": serializers.CharField(),
    "url": serializers.CharField(),
}


class ModelEvaluateView(APIView):
    """``POST /api/v1/models/:id/evaluate`` → 202 with the new evaluation's id."""

    @extend_schema(
        summary="Evaluate a model against its base",
        description=(
            "Queues an evaluation of the base and the fine-tuned model(s) on a test set. Each candidate is asked on "
            "an inference endpoint named by the operator (GET /api/v1/inference/endpoints): `base_endpoint` and "
            "`fine_tuned_endpoint`, or `endpoint` for both; absent means the studio's default endpoint, so the "
            "seed's body (`test_set_path`, `base_model_name`, `fine_tuned_name`) works unchanged. A URL is never "
            "accepted. On `local`, names are base-model catalogue names, `base_model_name` defaults to the model's "
            "base and leaving `fine_tuned_name` out means this model's own LoRA adapter on that base. A model "
            "trained by lora-sft is asked as it was taught (its system prompt and chat template) unless "
            "`prompt_template` is given. 400: an unknown or disabled endpoint, named with the reason."
        ),
        request=EvaluateRequestSerializer,
        responses={
            202: inline_serializer(
                "EvaluationAccepted",
                ACCEPTED_FIELDS,
            ),
            400: OpenApiResponse(description="Invalid request; `errors` names each field and why"),
            404: OpenApiResponse(description="No such model (or not yours)"),
        },
    )
    def post(self, request, model_id: int):
        model = get_object_or_404(selectors.evaluatable_models(user=request.user), id=model_id)
        serializer = EvaluateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        evaluation = services.evaluation_start(user=request.user, model=model, **serializer.validated_data)
        return _accepted(evaluation, "Evaluation job created")


def _accepted(evaluation, message: str) -> Response:
    """The 202 of a queued evaluation (an evaluation or a parity check): where to follow it."""
    body = {
        "evaluation_id": evaluation.id,
        "status": evaluation.status,
        "message": message,
        "url": f"/api/v1/evaluations/{evaluation.id}",
    }
    return Response(body, status=status.HTTP_202_ACCEPTED)


class ModelParityView(APIView):
    """``POST /api/v1/models/:id/parity`` → 202 with the parity check's evaluation id."""

    @extend_schema(
        summary="Check a deployed model against its adapter",
        description=(
            "Queues a parity check: the same test set asked of this model's LoRA adapter in the studio's own engine "
            "(`local`) and of its live Ollama deployment (`ollama`), optionally also of `variants` (other tags of "
            "the deployment you built, e.g. `<name>:q8_0`), as a classification or, for a chat or instruction test "
            "set, a generation (`task`: default the test set's). The report, under `results.parity`, gives the "
            "agreement rate, each metric's difference (deployed − local) with a bootstrap 95 % CI (and McNemar for "
            "classification), and the examples whose answers changed. A drop in accuracy (token F1 for generation) "
            "beyond PARITY_MAX_DROP marks the deployment drifted (model page, API, lineage). 400: no live "
            "deployment, no adapter, a variant that is not a tag "
            "of the deployment, or any field that is not one of these."
        ),
        request=ParityRequestSerializer,
        responses={
            202: inline_serializer(
                "ParityAccepted",
                ACCEPTED_FIELDS,
            ),
            400: OpenApiResponse(description="Invalid request; `errors` names each field and why"),
            404: OpenApiResponse(description="No such model (or not yours)"),
        },
    )
    def post(self, request, model_id: int):
        from .. import parity

        model = get_object_or_404(selectors.evaluatable_models(user=request.user), id=model_id)
        serializer = ParityRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        evaluation = parity.parity_check_start(user=request.user, model=model, **serializer.validated_data)
        return _accepted(evaluation, "Parity check created")


class EvaluationViewSet(OwnedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Evaluation.objects.select_related("model")
    serializer_class = EvaluationSerializer
    filterset_class = EvaluationFilter
    ordering_fields = ["created_at", "completed_at", "status", "id"]
    ordering = ["-created_at", "-id"]

    def get_serializer_class(self):
        return EvaluationListSerializer if self.action == "list" else EvaluationSerializer

    def update(self, request, *args, **kwargs):
        evaluation = self.get_object()
        serializer = EvaluationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.evaluation_update(evaluation=evaluation, **serializer.validated_data)
        return Response(EvaluationSerializer(evaluation).data)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, **kwargs)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        evaluation = self.get_object()
        services.evaluation_cancel(evaluation=evaluation)
        return Response(EvaluationSerializer(evaluation).data)

    @extend_schema(request=None, responses=EvaluationSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Run a failed evaluation again; stored predictions are kept and not asked again (409 unless failed)."""
        evaluation = self.get_object()
        services.evaluation_retry(evaluation=evaluation)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={(200, "text/csv"): OpenApiResponse(description="One row per prediction (a file download).")}
    )
    @action(detail=True, methods=["get"], url_path="export.csv", renderer_classes=[CSVRenderer, JSONRenderer])
    def export_csv(self, request, pk=None):
        evaluation = self.get_object()
        out = io.StringIO()
        writer = csv.writer(out)
        metrics = _generation_metrics(evaluation)
        judge_fields = ["judge", "judge_no_verdict"] if metrics else []
        fields = [*EXPORT_FIELDS, *(f"score_{metric}" for metric in metrics), *judge_fields]
        writer.writerow(fields)
        for row in _export_rows(evaluation):
            row |= {f"score_{metric}": row["scores"].get(metric) for metric in metrics}
            writer.writerow([_csv_safe(row.get(field)) for field in fields])
        return _download(out.getvalue(), evaluation, "csv", "text/csv; charset=utf-8")

    @extend_schema(
        responses=inline_serializer(
            "EvaluationExport",
            {
                "evaluation": EvaluationSerializer(),
                "predictions": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    @action(detail=True, methods=["get"], url_path="export.json", renderer_classes=[JSONRenderer])
    def export_json(self, request, pk=None):
        evaluation = self.get_object()
        body = {
            "evaluation": EvaluationSerializer(evaluation).data,
            "predictions": list(_export_rows(evaluation)),
        }
        return _download(json.dumps(body, default=str), evaluation, "json", "application/json")


def _generation_metrics(evaluation: Evaluation) -> list[str]:
    results = evaluation.results or {}
    return list(results.get("metrics") or []) if results.get("task") == "generation" else []


def _export_rows(evaluation: Evaluation):
    roles = {name: ("base" if i == 0 else "fine_tuned") for i, name in enumerate(evaluation.candidates)}
    # A generation's judge outcome per example (only the examples the viewer keeps carry one), and whether an
    # answer of the judge named no winner (its "tie" is then no verdict).
    judged = {example["index"]: example["judge"] for example in evaluation.examples or () if "judge" in example}
    for prediction in selectors.evaluation_predictions(evaluation=evaluation).iterator(chunk_size=2000):
        verdicts = judged.get(prediction.index) or {}
        yield {
            "scores": prediction.scores or {},
            "judge": verdicts.get("outcome", ""),
            "judge_no_verdict": named_no_winner(verdicts) if verdicts else "",
            "index": prediction.index,
            "candidate": prediction.candidate,
            "role": roles.get(prediction.candidate, ""),
            "input": prediction.input_text,
            "expected": prediction.expected,
            "prediction_text": prediction.prediction_text,
            "parsed_label": prediction.parsed_label,
            "correct": prediction.correct,
            "latency_ms": prediction.latency_ms,
            "eval_count": prediction.eval_count,
            "eval_duration_ns": prediction.eval_duration_ns,
            "error": prediction.error,
        }


def _csv_safe(value):
    # Model answers are untrusted: a cell starting with = + - @ would be a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _download(content: str, evaluation: Evaluation, extension: str, content_type: str) -> HttpResponse:
    filename = download_filename(f"evaluation-{evaluation.id}", extension=f".{extension}")
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@extend_schema(tags=["evaluations"])
class ChatUsageView(APIView):
    """How much your models were asked per day (chat completions, responses and the model page's Chat): requests,
    failures and the tokens the serving engine counted; never what was said. Staff see everyone's."""

    @extend_schema(parameters=[ChatUsageQuerySerializer], responses=ChatUsageSerializer(many=True))
    def get(self, request):
        query = ChatUsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.chat_usage_list(user=request.user, days=query.validated_data["days"])
        return Response(ChatUsageSerializer(rows, many=True).data)
