"""What the HTTP backends share: one pooled session, no redirects, transport failures mapped to the taxonomy."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from .base import Backend, BadAnswer, Refused, RetryPolicy, Timeout, Transient, Unreachable


class HttpBackend(Backend):
    def __init__(
        self,
        *,
        endpoint: str,
        url: str,
        concurrency: int = 4,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(endpoint=endpoint, concurrency=concurrency, timeout=timeout, retry=retry)
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update(headers or {})
        # Retries are ours (they count, back off and honour Retry-After per request), so urllib3's stay off.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    @property
    def label(self) -> str:
        return f"endpoint '{self.endpoint}' ({self.url})"

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs) -> requests.Response:
        """One HTTP exchange; a transport failure is Transient (Timeout or Unreachable once retries run out)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            response = self._session.request(
                method, f"{self.url}{path}", timeout=timeout, allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            raise Transient(f"no answer within {timeout:g}s", final=Timeout)
        except requests.RequestException as exc:
            raise Transient(describe(exc), final=Unreachable)
        if response.is_redirect or 300 <= response.status_code < 400:
            # The URL is the operator's choice: a redirect elsewhere (a moved or hijacked host) is not followed.
            target = response.headers.get("Location", "")[:200] or "an unnamed location"
            raise Refused(
                f"{self.label} answered HTTP {response.status_code} redirecting to {target}; redirects are not "
                "followed: configure the endpoint with the server's own address",
                endpoint=self.endpoint,
            )
        return response

    def _single(self, method: str, path: str, **kwargs) -> requests.Response:
        """One attempt outside the retry loop (model lists): Transient becomes its final error at once."""
        try:
            return self._request(method, path, **kwargs)
        except Transient as exc:
            raise exc.final(f"{self.label} failed on {path}: {exc}", endpoint=self.endpoint) from None


def json_body(response: requests.Response) -> dict:
    """The answer as a JSON object, or Transient(BadAnswer): a half-written answer is worth asking again."""
    try:
        body = response.json()
    except ValueError:
        raise Transient("malformed JSON in the answer", final=BadAnswer)
    if not isinstance(body, dict):
        raise Transient("the answer is not a JSON object", final=BadAnswer)
    return body


def retry_after_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return None  # an HTTP date: rare from inference servers; our own backoff applies


def describe(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "Connection aborted" in text or "Connection reset" in text:
        return "connection closed without an answer"
    return f"{exc.__class__.__name__}: {text[:200]}"


def int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
