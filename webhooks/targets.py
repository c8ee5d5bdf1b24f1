"""Where a webhook may point: checked at creation and again before every delivery.

Users give these URLs, so they are the one outbound target not chosen by an operator: no
loopback, link-local (cloud metadata), private, reserved or multicast address, unless the
operator allows private targets (WEBHOOK_ALLOW_PRIVATE_TARGETS, for an intranet receiver).
Every address a name resolves to must pass, and the check runs again at delivery time, so a
name that later resolves inward is refused then. The delivery then connects to the address
that was checked (``post_to_target``), not to whatever the name resolves to a moment later:
a DNS answer that changes between the check and the connection (DNS rebinding) cannot turn
a public name into a loopback or metadata call. The Host header and the TLS certificate check
still use the name. A CA bundle named by REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) is trusted, as
requests itself would. Behind an egress proxy (HTTP_PROXY / HTTPS_PROXY, minus NO_PROXY) the
delivery goes through the proxy, which resolves the name itself: the check still runs, and the
proxy's own egress rules are what stands between a rebinding name and the inside.
"""

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter


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


@dataclass(frozen=True)
class Target:
    """A URL that passed the check, with the addresses its delivery may connect to (in the resolver's order)."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def check_target(url) -> Target:
    """The target when its URL may be called; TargetRefused otherwise."""
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
    addresses = _addresses(parts.hostname, port)
    if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        for address in addresses:
            what = _inward(address)
            if what:
                raise TargetRefused(
                    f"{parts.hostname} is {what} address ({address}); webhooks may only call public addresses"
                )
    return Target(url=url, host=parts.hostname, port=port, addresses=tuple(dict.fromkeys(map(str, addresses))))


class _PinnedAdapter(HTTPAdapter):
    """Connects to one checked address; the URL's name stays the Host header and the TLS server name."""

    def __init__(self, target: Target, address: str):
        self.target = target
        self.address = address
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.target.host
            pool_kwargs["assert_hostname"] = self.target.host
        return host_params, pool_kwargs


def post_to_target(target: Target, *, data: bytes, headers: dict, timeout) -> requests.Response:
    """POST to the checked addresses in turn until one takes the connection (no redirects followed). Only a
    connection that could not be made moves on to the next address. Through the egress proxy when one is set."""
    proxies = requests.utils.get_environ_proxies(target.url)
    if proxies:
        with requests.Session() as session:
            session.trust_env = False
            return session.post(
                target.url,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxies=proxies,
                verify=_ca_bundle(),
            )
    *earlier, last = target.addresses
    for address in earlier:
        try:
            return _post(target, address, data=data, headers=headers, timeout=timeout)
        except requests.ConnectionError as exc:
            if not _never_connected(exc):
                raise
    return _post(target, last, data=data, headers=headers, timeout=timeout)


def _post(target: Target, address: str, *, data: bytes, headers: dict, timeout) -> requests.Response:
    default_port = 443 if target.url.lower().startswith("https:") else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", _PinnedAdapter(target, address))
        session.mount("https://", _PinnedAdapter(target, address))
        return session.post(
            target.url,
            data=data,
            headers={**headers, "Host": host_header},
            timeout=timeout,
            allow_redirects=False,
            verify=_ca_bundle(),
        )


def _ca_bundle():
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def _never_connected(exc: requests.ConnectionError) -> bool:
    """Refused, unreachable or timed out while connecting: nothing was sent to that address."""
    from urllib3.exceptions import ConnectTimeoutError

    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), ConnectTimeoutError)
