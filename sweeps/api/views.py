"""``/api/v1/sweeps``: thin views over the sweep services."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from finetune_studio.api import OwnedQuerysetMixin
from models_app import registry

from .. import selectors, services
from ..models import Sweep
from .serializers import SweepCreateSerializer, SweepSerializer, TrialSerializer


def sweep_body(sweep: Sweep) -> dict:
    trials = selectors.sweep_trials(sweep=sweep)
    return {
        **SweepSerializer(sweep).data,
        "trials": TrialSerializer(trials, many=True, context={"sweep_status": sweep.status}).data,
        "ranking": selectors.sweep_ranking(sweep=sweep, trials=trials),
    }


@extend_schema(tags=["sweeps"])
class SweepViewSet(OwnedQuerysetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Hyperparameter sweeps: create (grid, or random with a seed), list, detail with trials and the
    Holm-corrected ranking, cancel, and promote the best trial through the registry's gate."""

    queryset = Sweep.objects.select_related("trainer")
    serializer_class = SweepSerializer
    filter_backends: list = []

    @extend_schema(request=SweepCreateSerializer, responses={201: OpenApiTypes.OBJECT})
    def create(self, request):
        given = SweepCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        try:
            sweep = services.sweep_create(
                owner=request.user,
                trainer_name=data.pop("trainer"),
                dataset_id=data.pop("dataset"),
                validation_dataset_id=data.pop("validation_dataset"),
                initial_model_id=data.pop("initial_model"),
                **data,
            )
        except services.SweepInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        sweep.refresh_from_db()
        return Response(sweep_body(sweep), status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request, pk=None):
        return Response(sweep_body(self.get_object()))

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        sweep = services.sweep_cancel(sweep_id=self.get_object().id)
        return Response(sweep_body(sweep))

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Move ``champion`` (or ``?alias=``) to the best trial's version; the name's gate decides."""
        sweep = self.get_object()
        try:
            moved = services.sweep_promote_best(
                sweep_id=sweep.id, moved_by=request.user, alias=request.query_params.get("alias", "champion")
            )
        except registry.GateRefused as exc:
            return Response({"detail": str(exc), "evidence": exc.evidence.as_dict()}, status=status.HTTP_409_CONFLICT)
        except registry.RegistryInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        except registry.OverrideNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(moved)
