from django.urls import path

from . import views

urlpatterns = [
    path("webhooks/", views.webhook_list, name="webhook-list"),
    path("webhooks/<int:pk>/", views.webhook_detail, name="webhook-detail"),
    path("webhooks/<int:pk>/test/", views.webhook_test, name="webhook-test"),
    path("webhooks/<int:pk>/rotate-secret/", views.webhook_rotate_secret, name="webhook-rotate-secret"),
    path("webhooks/<int:pk>/delete/", views.webhook_delete, name="webhook-delete"),
]
