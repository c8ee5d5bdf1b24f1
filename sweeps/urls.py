from django.urls import path

from . import views

urlpatterns = [
    path("sweeps/", views.sweep_list, name="sweep-list"),
    path("sweeps/<int:pk>/", views.sweep_detail, name="sweep-detail"),
    path("sweeps/<int:pk>/cancel/", views.sweep_cancel, name="sweep-cancel"),
    path("sweeps/<int:pk>/promote/", views.sweep_promote, name="sweep-promote"),
]
