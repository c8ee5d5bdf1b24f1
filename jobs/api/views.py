from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import OwnedQuerysetMixin, RequestTooLarge, ServiceUnavailable
from finetune_studio.objects import StorageError, UploadTooLarge
from finetune_studio.parsers import JSONParser

from .. import selectors, services
from ..filters import DatasetFilter, JobFilter
from ..models import Dataset, Job, Trainer
from ..uploads import limit_dataset_uploads
from .serializers import (
    BaseModelSerializer,
    DatasetSerializer,
    DatasetSplitResultSerializer,
    DatasetSplitSerializer,
    DatasetUploadSerializer,
    JobCompleteSerializer,
    JobCreateSerializer,
    JobSerializer,
    TrainerSerializer,
)


class DatasetViewSet(
    OwnedQuerysetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Datasets: upload (multipart ``file``, optional ``name``), list, detail, split, delete."""

    queryset = Dataset.objects.all()
    serializer_class = DatasetSerializer
    filterset_class = DatasetFilter
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    ordering_fields = ["created_at", "name", "records", "size_bytes"]

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            limit_dataset_uploads(request)
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(request=DatasetUploadSerializer, responses={201: DatasetSerializer})
    def create(self, request):
        try:
            upload = DatasetUploadSerializer(data=request.data)
            upload.is_valid(raise_exception=True)
            dataset = services.dataset_create(
                owner=request.user,
                uploaded_file=upload.validated_data["file"],
                name=upload.validated_data.get("name", ""),
            )
        except UploadTooLarge as exc:
            raise RequestTooLarge(f"The dataset is larger than the limit of {exc.max_bytes} bytes.")
        except StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while saving the dataset; nothing was recorded: {exc}")
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DatasetSplitSerializer, responses={201: DatasetSplitResultSerializer})
    @action(detail=True, methods=["post"])
    def split(self, request, pk=None):
        """A seeded split into two new datasets, train and test (stratified by label for classification)."""
        dataset = self.get_object()
        given = DatasetSplitSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:  # DatasetSplitInvalid is a 400 through the API's exception handler
            train, test = services.dataset_split(dataset_id=dataset.id, **given.validated_data)
        except StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while splitting the dataset; nothing was created: {exc}")
        body = {"train": DatasetSerializer(train).data, "test": DatasetSerializer(test).data}
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        dataset = self.get_object()
        try:
            services.dataset_delete(dataset_id=dataset.id)
        except StorageError as exc:
            raise ServiceUnavailable(f"Storage failed; nothing was deleted: {exc}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class TrainerListView(APIView):
    """Trainers users may pick, with availability on this installation."""

    @extend_schema(
        responses=inline_serializer(
            "TrainerList", {"count": serializers.IntegerField(), "results": TrainerSerializer(many=True)}
        )
    )
    def get(self, request):
        trainers = list(Trainer.objects.all())
        availability = {trainer.id: selectors.trainer_availability(trainer) for trainer in trainers}
        serializer = TrainerSerializer(trainers, many=True, context={"availability": availability})
        return Response({"count": len(trainers), "results": serializer.data})


class BaseModelListView(APIView):
    """Base models a job may name on this installation (nothing is downloaded)."""

    @extend_schema(
        responses=inline_serializer(
            "BaseModelList", {"count": serializers.IntegerField(), "results": BaseModelSerializer(many=True)}
        )
    )
    def get(self, request):
        catalogue = selectors.base_models_catalogue()
        return Response({"count": len(catalogue), "results": BaseModelSerializer(catalogue, many=True).data})


class JobViewSet(
    OwnedQuerysetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Training jobs: create, list (filters, ordering), detail, cancel, complete (external runners), delete."""

    queryset = Job.objects.select_related("trainer", "registered_model")
    serializer_class = JobSerializer
    filterset_class = JobFilter
    ordering_fields = ["created_at", "finished_at", "started_at", "name", "status", "base_model"]
    ordering = ["-created_at", "-id"]

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer})
    def create(self, request):
        given = JobCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        # JobsInvalid (400) and JobQueueUnavailable (503) are mapped by the API's exception handler.
        job = services.job_create(
            owner=request.user,
            name=data["name"],
            base_model=data["base_model"],
            dataset_id=data.get("dataset"),
            trainer_name=data["trainer"],
            hyperparameters_given=data.get("hyperparameters"),
            registered_name=data.get("registered_name", ""),
            validation_dataset_id=data.get("validation_dataset"),
            metadata=data.get("metadata"),
            initial_model_id=data.get("initial_model"),
        )
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        job = self.get_object()
        services.job_delete(job_id=job.id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job_id=self.get_object().id)
        return Response(JobSerializer(job).data)

    @extend_schema(request=JobCompleteSerializer, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        """External runners report the end: {status: succeeded|failed, error_message?, metrics?}."""
        job = self.get_object()
        report = JobCompleteSerializer(data=request.data)
        report.is_valid(raise_exception=True)
        with transaction.atomic():
            job, _changed = services.job_complete_external(job_id=job.id, **report.validated_data)
        job = self.get_queryset().get(id=job.id)
        return Response(JobSerializer(job).data)
