"""``POST /api/v1/registry/<name>/versions/<N>/evaluate``: the gate's evaluation in one call."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import ServiceUnavailable
from models_app import registry_selectors

from ..promotion import evaluation_start_for_promotion
from ..services import EvaluationQueueUnavailable, EvaluationsInvalid
from .serializers import EvaluationSerializer


class EvaluateForPromotionView(APIView):
    """Evaluate version N against the holder of the name's gated alias (the base when none), on the gate's
    test set: the evaluation a promotion needs. 409-free: the gate itself answers when the alias moves."""

    @extend_schema(tags=["registry"], request=None, responses={202: EvaluationSerializer})
    def post(self, request, name: str, version: int):
        raw_owner = request.query_params.get("owner")
        try:
            registered = registry_selectors.registered_name_get(
                user=request.user, name=name, owner_id=int(raw_owner) if raw_owner and raw_owner.isdigit() else None
            )
        except registry_selectors.AmbiguousName as exc:
            raise ValidationError({"owner": [str(exc)]}) from None
        gate = registry_selectors.name_gate(registered_name=registered)
        if gate is None:
            raise ValidationError({"gate": ["this name has no promotion gate: PUT one first"]})
        candidate = registered.versions.filter(version=int(version)).first()
        if candidate is None:
            raise NotFound(f"{registered.name} has no version {version}")
        holder = registered.aliases.filter(alias=gate.alias).select_related("model").first()
        try:
            evaluation = evaluation_start_for_promotion(
                user=request.user, candidate=candidate, gate=gate, holder=holder.model if holder else None
            )
        except EvaluationsInvalid as exc:
            raise ValidationError({field: [reason] for field, reason in exc.errors.items()}) from None
        except EvaluationQueueUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)
