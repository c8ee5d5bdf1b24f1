from django.urls import re_path

from .views import EndpointListView

urlpatterns = [
    re_path(r"^inference/endpoints/?$", EndpointListView.as_view(), name="inference-endpoints-api"),
]
