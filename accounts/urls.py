from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("token/", views.token_page, name="token"),
    path("token/create/", views.token_create_view, name="token-create"),
    path("token/revoke/", views.token_revoke_view, name="token-revoke"),
]
