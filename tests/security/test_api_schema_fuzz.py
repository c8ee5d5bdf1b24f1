"""schemathesis against /api/schema/ as alice: no 5xx and no response that breaks the schema.

In-process (the WSGI app), a few examples per operation so the whole run stays under a minute.
The SSE stream (an endless response) is left to the logs app's own tests; its JSON history is
fuzzed here with ``Accept: application/json``.
"""

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token

from .world import build_world

pytestmark = pytest.mark.django_db

EXAMPLES_PER_OPERATION = 15
# What the issue asks: no 5xx, bodies and content types as documented. Undocumented 4xx statuses
# (404 for a page past the end, 401, 409…) are expected answers, not schema breaks.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
]


@pytest.fixture
def wsgi_app():
    # A bare WSGI handler closes "old" connections around each request, which would end the test's
    # transaction; Django's own test client switches that off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def alice_schema(alice, wsgi_app):
    """The API schema as alice's token reads it, and the headers that carry the token."""
    token, _ = Token.objects.get_or_create(user=alice)
    headers = {"Authorization": f"Token {token.key}"}
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers=headers), headers


def _headers_for(case, headers: dict) -> dict:
    """What a case sends: a job's log stream (an endless SSE response) is asked for its JSON history instead."""
    sent = dict(headers)
    if case.path.rstrip("/").endswith("/logs") and case.method.upper() == "GET":
        sent["Accept"] = "application/json"
        case.query = {**(case.query or {}), "format": "json"}
    return sent


def test_the_api_answers_generated_requests_without_5xx_and_within_its_schema(alice, alice_schema, record_property):
    build_world(alice)
    schema, headers = alice_schema
    failures: dict[str, str] = {}
    calls = 0
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case):
            nonlocal calls
            sent = _headers_for(case, headers)
            calls += 1
            response = case.call(headers=sent)
            case.validate_response(response, checks=CHECKS, headers=sent)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # one failing operation must not hide the others
            failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    record_property("schemathesis_calls", calls)
    summary = {"scenario": "schemathesis", "operations": operations, "requests": calls, "failing": len(failures)}
    print("FAULTS", json.dumps(summary))
    assert operations >= 20
    assert not failures, "\n\n".join(f"{label}\n{reason}" for label, reason in failures.items())


# The fuzzer's ids rarely name an object that exists: each read of one of alice's objects is asked once, by id.
OBJECT_OF_PATH = {
    "datasets": "dataset",
    "evaluations": "evaluation",
    "jobs": "job",
    "models": "model",
    "registry": "registered_name",
    "sweeps": "sweep",
    "webhooks": "webhook",
}


def test_every_read_of_an_existing_object_answers_within_its_schema(alice, alice_schema):
    ids = build_world(alice).ids()
    schema, headers = alice_schema
    answered, failures = {}, {}
    for result in schema.get_all_operations():
        operation = result.ok()
        names = [parameter.name for parameter in operation.path_parameters]
        if operation.method.upper() != "GET" or not names:
            continue
        label = f"GET {operation.path}"
        resource = operation.path.split("/")[3]
        parameters = {name: ids[OBJECT_OF_PATH[resource]] for name in names if name in ("id", "job_id", "name")}
        parameters |= {"alias": "champion"} if "alias" in names else {}
        case = operation.Case(path_parameters=parameters)
        sent = _headers_for(case, headers)
        response = case.call(headers=sent)
        answered[label] = response.status_code
        try:
            case.validate_response(response, checks=CHECKS, headers=sent)
        except (Exception, BaseExceptionGroup) as exc:
            failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert not failures, "\n\n".join(f"{label}\n{reason}" for label, reason in failures.items())
    # Every object exists (the world's name has a champion): each read answers 200, so each body was checked.
    assert {label: status for label, status in answered.items() if status != 200} == {}
    assert len(answered) >= 14
