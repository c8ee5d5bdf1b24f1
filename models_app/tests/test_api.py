from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from models_app.models import RegisteredModel
from tests.factories import make_job, make_model, make_trained_job

API = "/api/v1/models"


def test_alice_registers_a_model_and_reads_it_back_with_empty_links(alice_api, alice):
    response = alice_api.post(API, {"name": "classifier v2", "base_model": "llama3.2:3b", "type": "lora"})
    assert response.status_code == 201, response.content
    model_id = response.json()["model"]["id"]

    body = alice_api.get(f"{API}/{model_id}").json()
    assert set(body) == {"model", "download_links"}
    assert body["download_links"] == {"lora_adapters": None, "gguf": None, "files": {}}
    model = body["model"]
    assert model["name"] == "classifier v2" and model["status"] == "pending" and model["owner"] == alice.id
    assert model["storage_path"] == f"users/{alice.id}/models/{model_id}/"
    assert alice_api.get(f"{API}/{model_id}/").status_code == 200  # both URL spellings work


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"base_model": "x"}, "name"),
        ({"name": "   ", "base_model": "x"}, "name"),
        ({"name": "a", "base_model": "x", "type": "diffusion"}, "type"),
        ({"name": "a", "base_model": "x", "status": "exploded"}, "status"),
        ({"name": "a", "base_model": "x", "job": "seven"}, "job"),
        ({"name": "a" * 300, "base_model": "x"}, "name"),
    ],
)
def test_it_refuses_invalid_registrations_with_the_field_named(alice_api, payload, field):
    response = alice_api.post(API, payload)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert response.json()["detail"]
    assert not RegisteredModel.objects.exists()


def test_it_refuses_linking_someone_elses_job(alice_api, bob):
    job = make_trained_job(bob, artifacts={})
    response = alice_api.post(API, {"name": "a", "base_model": "x", "job": job.id})
    assert response.status_code == 400
    assert "job" in response.json()["errors"]


def test_it_refuses_a_second_model_for_the_same_job_with_409(alice_api, alice):
    job = make_trained_job(alice, artifacts={})
    assert alice_api.post(API, {"name": "a", "base_model": "x", "job": job.id}).status_code == 201
    response = alice_api.post(API, {"name": "b", "base_model": "x", "job": job.id})
    assert response.status_code == 409
    assert "already has a model" in response.json()["detail"]


def test_patch_changes_editable_fields_and_put_needs_them_all(alice_api, alice):
    model = make_model(alice, files={"adapter_model.safetensors": b"weights"})
    response = alice_api.patch(f"{API}/{model.id}", {"status": "archived", "description": "old"})
    assert response.status_code == 200
    assert response.json()["model"]["status"] == "archived"
    assert alice_api.put(f"{API}/{model.id}", {"name": "only name"}).status_code == 400
    full = {"name": "n2", "description": "", "base_model": "b2", "type": "gguf", "status": "ready"}
    response = alice_api.put(f"{API}/{model.id}", full)
    assert response.status_code == 200
    model.refresh_from_db()
    assert (model.name, model.base_model, model.type, model.status) == ("n2", "b2", "gguf", "ready")


def test_a_new_registration_cannot_claim_to_be_ready(alice_api):
    """A model is ready only when its manifest has files; a new record has none yet."""
    response = alice_api.post(API, {"name": "empty", "base_model": "x", "status": "ready"})
    assert response.status_code == 400, response.content
    assert "only once it has files" in response.json()["errors"]["status"][0]
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_a_model_without_files_cannot_be_made_ready_but_one_with_files_can(alice_api, alice, method):
    empty = make_model(alice, status="pending")
    full = {"name": "n", "description": "", "base_model": "b", "type": "lora", "status": "ready"}
    body = full if method == "put" else {"status": "ready"}
    response = getattr(alice_api, method)(f"{API}/{empty.id}", body)
    assert response.status_code == 400, response.content
    assert "status" in response.json()["errors"]
    empty.refresh_from_db()
    assert empty.status == "pending" and empty.name == "my model"

    uploaded = make_model(alice, status="uploading", files={"adapter_model.safetensors": b"weights"})
    response = getattr(alice_api, method)(f"{API}/{uploaded.id}", body)
    assert response.status_code == 200, response.content
    assert response.json()["model"]["status"] == "ready"


def test_a_job_that_wrote_nothing_leaves_a_model_awaiting_files_not_a_ready_one(alice):
    from models_app.services import model_create_from_job

    job = make_job(alice, status="succeeded", artifacts={})
    assert model_create_from_job(job_id=job.id).status == "pending"


@pytest.mark.parametrize("field", ["storage_path", "files", "total_size", "owner", "gguf_path"])
def test_it_refuses_to_let_clients_write_server_fields(alice_api, alice, field):
    model = make_model(alice)
    response = alice_api.patch(f"{API}/{model.id}", {field: "users/2/"})
    assert response.status_code == 400
    assert field in response.json()["errors"]
    model.refresh_from_db()
    assert model.storage_path == f"users/{alice.id}/models/{model.id}/"


# --- Listing: filters, ordering, pagination ---------------------------------------------------


@pytest.fixture
def catalogue(alice, bob):
    now = timezone.now()
    rows = [
        ("sentiment llama", "tiny-llama", "ready", 10, now - timedelta(days=10)),
        ("sentiment gemma", "gemma-2b", "ready", 30, now - timedelta(days=5)),
        ("contract clauses", "tiny-llama", "failed", 20, now - timedelta(days=1)),
        ("archived thing", "gemma-2b", "archived", 5, now),
    ]
    models = {}
    for name, base, status, size, created in rows:
        model = RegisteredModel.objects.create(
            owner=alice, name=name, base_model=base, status=status, total_size=size, description=f"about {name}"
        )
        RegisteredModel.objects.filter(id=model.id).update(created_at=created)
        models[name] = model
    RegisteredModel.objects.create(owner=bob, name="bob's sentiment", base_model="tiny-llama", status="ready")
    return models


def names(response):
    assert response.status_code == 200, response.content
    return [item["name"] for item in response.json()["results"]]


def test_alice_lists_only_her_models_newest_first(alice_api, catalogue):
    assert names(alice_api.get(API)) == ["archived thing", "contract clauses", "sentiment gemma", "sentiment llama"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("base_model=tiny-llama", ["contract clauses", "sentiment llama"]),
        ("status=ready", ["sentiment gemma", "sentiment llama"]),
        ("search=SENTIMENT", ["sentiment gemma", "sentiment llama"]),
        ("search=about contract", ["contract clauses"]),
        ("ordering=total_size", ["archived thing", "sentiment llama", "contract clauses", "sentiment gemma"]),
        ("ordering=-name", ["sentiment llama", "sentiment gemma", "contract clauses", "archived thing"]),
        ("status=ready&base_model=gemma-2b", ["sentiment gemma"]),
    ],
)
def test_filters_search_and_ordering(alice_api, catalogue, query, expected):
    assert names(alice_api.get(f"{API}?{query}")) == expected


def test_date_filters_take_whole_days_or_exact_times(alice_api, catalogue):
    created = catalogue["sentiment gemma"].__class__.objects.get(name="sentiment gemma").created_at
    day = created.date().isoformat()
    assert names(alice_api.get(f"{API}?date_from={day}&date_to={day}")) == ["sentiment gemma"]
    exact = created.isoformat().replace("+00:00", "Z")
    assert names(alice_api.get(f"{API}?date_from={exact}&date_to={exact}")) == ["sentiment gemma"]
    later = (created + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert "sentiment gemma" not in names(alice_api.get(f"{API}?date_from={later}"))


def test_job_filter(alice_api, alice, catalogue):
    job = make_trained_job(alice, artifacts={})
    RegisteredModel.objects.filter(id=catalogue["contract clauses"].id).update(job=job)
    assert names(alice_api.get(f"{API}?job={job.id}")) == ["contract clauses"]


@pytest.mark.parametrize(
    "query",
    [
        "status=exploded",
        "type=diffusion",
        "date_from=yesterday",
        "date_to=2025-13-45",
        "date_to=9999-12-31",
        "date_from=9999-12-31",
        "date_to=9999-12-31T23:59:59-14:00",
        "date_from=0001-01-01T00:00:00%2B14:00",
        "job=abc",
        "job=-3",
        "ordering=password",
        "ordering=-owner__password",
        "page=0",
        "page=abc",
        "page_size=0",
        "page_size=-5",
        "page_size=lots",
    ],
)
def test_bad_query_values_are_a_400_naming_the_parameter(alice_api, catalogue, query):
    response = alice_api.get(f"{API}?{query}")
    assert response.status_code == 400, response.content
    assert query.split("=")[0] in response.json()["errors"]


def test_the_widest_whole_days_that_fit_are_accepted(alice_api, catalogue):
    assert len(names(alice_api.get(f"{API}?date_from=0001-01-01&date_to=9999-12-30"))) == len(catalogue)


def test_pagination_edges(alice_api, catalogue):
    first = alice_api.get(f"{API}?page_size=3").json()
    assert first["count"] == 4 and len(first["results"]) == 3 and first["next"] and first["previous"] is None
    last = alice_api.get(f"{API}?page_size=3&page=2").json()
    assert len(last["results"]) == 1 and last["next"] is None
    assert alice_api.get(f"{API}?page_size=3&page=3").status_code == 404
    assert len(alice_api.get(f"{API}?page_size=100000").json()["results"]) == 4  # capped at 200, not an error
    assert alice_api.get(f"{API}?page=last&page_size=3").json()["results"][0]["name"] == "sentiment llama"


def test_listing_costs_the_same_number_of_queries_whatever_the_page_size(alice_api, alice):
    for index in range(30):
        make_model(alice, name=f"m{index}", job=None)

    def queries_for(page_size: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = alice_api.get(f"{API}?page_size={page_size}")
        assert response.status_code == 200 and len(response.json()["results"]) == min(page_size, 30)
        return len(captured)

    assert queries_for(1) == queries_for(30)


def test_list_queries_are_bounded(alice_api, alice, django_assert_max_num_queries):
    for index in range(25):
        make_model(alice, name=f"m{index}")
    with django_assert_max_num_queries(3):  # token lookup, count, page
        assert alice_api.get(f"{API}?page_size=25").status_code == 200


def test_deep_pages_hold_the_same_models_as_plain_offsets_in_one_query(alice_api, alice, monkeypatch):
    from models_app.api.views import DeepPagePaginator

    for index in range(23):
        model = make_model(alice, name=f"m{index}")
        RegisteredModel.objects.filter(id=model.id).update(total_size=index % 4)  # ties: id breaks them
    plain = [
        model["id"]
        for page in (1, 2, 3, 4, 5)
        for model in alice_api.get(f"{API}?page_size=5&page={page}").json()["results"]
    ]
    monkeypatch.setattr(DeepPagePaginator, "DEEP_OFFSET", 5)  # every page after the first picks ids first
    with CaptureQueriesContext(connection) as captured:
        pages = [alice_api.get(f"{API}?page_size=5&page={page}").json() for page in (1, 2, 3, 4, 5)]
    assert [model["id"] for page in pages for model in page["results"]] == plain
    assert len(plain) == 23 and len(set(plain)) == 23
    assert len(captured) == 5 * 3  # token, count, page: the ids come from a subquery
    by_size = [
        m["id"]
        for p in (3, 4)
        for m in alice_api.get(f"{API}?page_size=5&page={p}&ordering=-total_size").json()["results"]
    ]
    monkeypatch.setattr(DeepPagePaginator, "DEEP_OFFSET", 10_000)
    assert by_size == [
        m["id"]
        for p in (3, 4)
        for m in alice_api.get(f"{API}?page_size=5&page={p}&ordering=-total_size").json()["results"]
    ]


@pytest.mark.postgres
def test_search_and_size_ordering_can_use_their_indexes_on_postgresql(alice):
    from django.db.models import Q

    from models_app.selectors import model_list

    # Staff-wide (no owner index to fall back on): whether the trigram indexes match Django's SQL for icontains.
    search = RegisteredModel.objects.filter(Q(name__icontains="needle") | Q(description__icontains="needle"))
    by_size = model_list(user=alice).order_by("-total_size", "-id")[:50]
    plans = {}
    # A tiny test table: ask whether an index *can* serve the query, not whether the planner would pick it.
    for name, queryset, switches in (
        ("search", search.order_by(), ("enable_seqscan", "enable_indexscan")),  # only bitmap scans remain
        ("size", by_size, ("enable_seqscan", "enable_sort")),
    ):
        with connection.cursor() as cursor:
            for switch in switches:
                cursor.execute(f"SET LOCAL {switch} = off")
            sql, params = queryset.query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plans[name] = "\n".join(row[0] for row in cursor.fetchall())
            for switch in switches:
                cursor.execute(f"RESET {switch}")
    assert "models_name_trgm_idx" in plans["search"] and "models_description_trgm_idx" in plans["search"]
    assert "models_owner_size_idx" in plans["size"]


def test_staff_lists_everyones_models(olivia_api, catalogue):
    assert len(names(olivia_api.get(API))) == 5
