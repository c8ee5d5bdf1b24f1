"""Where a webhook may point: checked at creation and again before every delivery.

Users give these URLs, so they are the one outbound target not chosen by an operator: no
loopback, link-local (cloud metadata), private, reserved or multicast address, unless the
operator allows private targets (WEBHOOK_ALLOW_PRIVATE_TARGETS, for an intranet receiver).
Every address a name resolves to must pass, and the check runs again at delivery time, so a
name that later resolves inward is refused then.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class TargetRefused(ValueError):
    """A webhook URL that may not be called; the message says why."""


def _addresses(host: str, port: int) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve: {exc}") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def _inward(address) -> str | None:
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    for flag, what in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "an unspecified"),
        ("is_reserved", "a reserved"),
        ("is_private", "a private"),
    ):
        if getattr(address, flag):
            return what
    return None


def check_target(url) -> str:
    """The URL when it may be called; TargetRefused otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise TargetRefused("a URL is required")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must start with http:// or https://")
    if parts.username or parts.password:
        raise TargetRefused("the URL may not carry credentials; the signature authenticates deliveries")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the URL's port is not a number between 1 and 65535") from None
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return url
    for address in _addresses(parts.hostname, port):
        what = _inward(address)
        if what:
            raise TargetRefused(
                f"{parts.hostname} is {what} address ({address}); webhooks may only call public addresses"
            )
    return url
