from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from .services import token_create, token_revoke


@login_required
def token_page(request):
    token = Token.objects.filter(user=request.user).first()
    return render(request, "accounts/token.html", {"token": token, "new_key": request.session.pop("new_token", None)})


@login_required
@require_POST
def token_create_view(request):
    token = token_create(user=request.user)
    # Shown once, on the next page load, then only its existence is displayed.
    request.session["new_token"] = token.key
    messages.success(request, "New API token created. Copy it now: it will not be shown again.")
    return redirect("token")


@login_required
@require_POST
def token_revoke_view(request):
    if token_revoke(user=request.user):
        messages.success(request, "API token revoked. Clients using it are refused from now on.")
    else:
        messages.info(request, "You had no API token.")
    return redirect("token")
