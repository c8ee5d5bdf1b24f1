"""Sign-in, sign-out, API tokens and the first admin."""

from django.core.management import call_command
from django.urls import reverse
from rest_framework.authtoken.models import Token

from conftest import PASSWORD


def test_token_from_drf_create_token_works(alice, api_client_for, capsys):
    call_command("drf_create_token", "alice")
    key = capsys.readouterr().out.split()[2]
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/").json()["user"] == "alice"


def test_pages_redirect_anonymous_users_to_login(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_then_dashboard_then_logout(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    page = client.get(reverse("dashboard"))
    assert page.status_code == 200
    assert b"No job is running" in page.content
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("dashboard")).status_code == 302


def test_token_page_creates_replaces_and_revokes(alice_browser, alice):
    alice_browser.post(reverse("token-create"))
    first = Token.objects.get(user=alice).key
    page = alice_browser.get(reverse("token"))
    assert first.encode() in page.content
    assert first.encode() not in alice_browser.get(reverse("token")).content  # shown once
    alice_browser.post(reverse("token-create"))
    assert Token.objects.get(user=alice).key != first
    alice_browser.post(reverse("token-revoke"))
    assert not Token.objects.filter(user=alice).exists()


def test_revoked_token_stops_working_at_once(alice, alice_api):
    assert alice_api.get("/api/v1/").status_code == 200
    Token.objects.filter(user=alice).delete()
    assert alice_api.get("/api/v1/").status_code == 401


def test_session_writes_need_csrf(alice):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(reverse("token-create")).status_code == 403


def test_ensure_admin_creates_one_admin_with_a_random_password(db, capsys, django_user_model):
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = out.split("password:")[1].split()[0]
    admin = django_user_model.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    call_command("ensure_admin")
    assert "already exists" in capsys.readouterr().out
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
