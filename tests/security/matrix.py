"""The authorization matrix, written once: every owned resource × every action.

Each row is one request against one of alice's objects; ``{job}``-style fields are filled
from ``World.ids()``. The tests in test_authorization.py run every row as anonymous, bob,
alice and olivia, and the CSRF test reuses the write rows.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Api:
    name: str
    method: str
    path: str
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    multipart: bool = False

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def url(self, ids: dict) -> str:
        return self.path.format(**ids)


@dataclass(frozen=True)
class Page:
    name: str
    method: str
    path: str
    data: dict | None = None

    @property
    def is_write(self) -> bool:
        return self.method == "POST"

    def url(self, ids: dict) -> str:
        return self.path.format(**ids)


API_OBJECT_ENDPOINTS = [
    Api("dataset detail", "GET", "/api/v1/datasets/{dataset}"),
    Api("dataset delete", "DELETE", "/api/v1/datasets/{dataset}/"),
    Api("dataset split", "POST", "/api/v1/datasets/{dataset}/split", {"test_fraction": 0.5, "seed": 1}),
    Api("job detail", "GET", "/api/v1/jobs/{job}"),
    Api("job cancel", "POST", "/api/v1/jobs/{job}/cancel"),
    Api("job complete", "POST", "/api/v1/jobs/{job}/complete", {"status": "succeeded"}),
    Api("job delete", "DELETE", "/api/v1/jobs/{finished_job}"),
    Api("log history", "GET", "/api/v1/jobs/{job}/logs?format=json"),
    Api("log stream (SSE)", "GET", "/api/v1/jobs/{job}/logs", headers={"HTTP_ACCEPT": "text/event-stream"}),
    Api("log text download", "GET", "/api/v1/jobs/{job}/logs.txt"),
    Api("log append", "POST", "/api/v1/jobs/{job}/logs", ["injected by someone else"]),
    Api("model detail and links", "GET", "/api/v1/models/{model}"),
    Api("model update", "PATCH", "/api/v1/models/{model}", {"description": "changed by someone else"}),
    Api("model replace", "PUT", "/api/v1/models/{model}", {"name": "stolen", "description": "x"}),
    Api("model delete", "DELETE", "/api/v1/models/{model}"),
    Api("model ZIP download", "GET", "/api/v1/models/{model}/download"),
    Api("model file upload", "POST", "/api/v1/models/{model}/files", multipart=True),
    Api(
        "model evaluate",
        "POST",
        "/api/v1/models/{model}/evaluate",
        {"test_set_path": "datasets/users/1/x.jsonl", "base_model_name": "tiny"},
    ),
    Api("model deploy to Ollama", "POST", "/api/v1/models/{model}/deploy", {}),
    Api("model parity check", "POST", "/api/v1/models/{model}/parity", {"test_set_path": "datasets/users/1/x.jsonl"}),
    Api("registered name detail", "GET", "/api/v1/registry/{registered_name}"),
    Api("alias resolve", "GET", "/api/v1/registry/{registered_name}/aliases/champion"),
    Api("alias move", "PUT", "/api/v1/registry/{registered_name}/aliases/candidate", {"version": 1}),
    Api("evaluate a version for promotion", "POST", "/api/v1/registry/{registered_name}/versions/1/evaluate"),
    Api("gate read", "GET", "/api/v1/registry/{registered_name}/gate"),
    Api("gate set", "PUT", "/api/v1/registry/{registered_name}/gate", {"test_set_path": "x", "threshold": 0.5}),
    Api("gate remove", "DELETE", "/api/v1/registry/{registered_name}/gate"),
    Api("sweep detail", "GET", "/api/v1/sweeps/{sweep}"),
    Api("sweep cancel", "POST", "/api/v1/sweeps/{sweep}/cancel"),
    Api("sweep promote the best", "POST", "/api/v1/sweeps/{sweep}/promote"),
    Api("webhook detail", "GET", "/api/v1/webhooks/{webhook}"),
    Api("webhook deliveries", "GET", "/api/v1/webhooks/{webhook}/deliveries"),
    Api("webhook send test", "POST", "/api/v1/webhooks/{webhook}/test"),
    Api("webhook rotate secret", "POST", "/api/v1/webhooks/{webhook}/rotate-secret"),
    Api("webhook delete", "DELETE", "/api/v1/webhooks/{webhook}"),
    Api("evaluation detail", "GET", "/api/v1/evaluations/{evaluation}"),
    Api("evaluation update", "PATCH", "/api/v1/evaluations/{evaluation}", {"note": "changed by someone else"}),
    Api("evaluation cancel", "POST", "/api/v1/evaluations/{running_evaluation}/cancel"),
    Api("evaluation retry", "POST", "/api/v1/evaluations/{evaluation}/retry"),
    Api("evaluation CSV export", "GET", "/api/v1/evaluations/{evaluation}/export.csv"),
    Api("evaluation JSON export", "GET", "/api/v1/evaluations/{evaluation}/export.json"),
]

API_LISTS = [
    ("datasets", "/api/v1/datasets/", "dataset"),
    ("jobs", "/api/v1/jobs/", "job"),
    ("models", "/api/v1/models/", "model"),
    ("evaluations", "/api/v1/evaluations/", "evaluation"),
    ("registered names", "/api/v1/registry/", "registered_name_id"),
    ("webhooks", "/api/v1/webhooks/", "webhook"),
    ("sweeps", "/api/v1/sweeps/", "sweep"),
]

API_COLLECTION_WRITES = [
    Api("job create", "POST", "/api/v1/jobs/", {"name": "x", "base_model": "tiny", "trainer": "external"}),
    Api("model create", "POST", "/api/v1/models/", {"name": "x", "base_model": "tiny"}),
    Api("dataset upload", "POST", "/api/v1/datasets/", multipart=True),
    Api("sweep create", "POST", "/api/v1/sweeps/", {"name": "x", "trainer": "example"}),
    Api(
        "webhook create",
        "POST",
        "/api/v1/webhooks/",
        {"url": "https://hooks.example.com/x", "events": ["job.finished"]},
    ),
]

PAGE_OBJECT_ENDPOINTS = [
    Page("job page", "GET", "/jobs/{job}/"),
    Page("job log viewer", "GET", "/jobs/{job}/logs/"),
    Page("job cancel", "POST", "/jobs/{job}/cancel/"),
    Page("job delete", "POST", "/jobs/{finished_job}/delete/"),
    Page("dataset page", "GET", "/datasets/{dataset}/"),
    Page("dataset page preview", "GET", "/datasets/{dataset}/?records=5&max_length=64"),
    Page("dataset split", "POST", "/datasets/{dataset}/split/", {"test_fraction": "0.5", "seed": "1"}),
    Page("dataset delete", "POST", "/datasets/{dataset}/delete/"),
    Page("model page", "GET", "/models/{model}/"),
    Page("model ZIP download", "GET", "/models/{model}/download/"),
    Page("model delete", "POST", "/models/{model}/delete/"),
    Page("model parity check form", "GET", "/models/{model}/parity/"),
    Page("model parity check", "POST", "/models/{model}/parity/", {"test_set_path": "x"}),
    Page("registered name page", "GET", "/registry/{registered_name}/"),
    Page("alias move", "POST", "/registry/{registered_name}/aliases/", {"alias": "candidate", "version": "1"}),
    Page("gate set", "POST", "/registry/{registered_name}/gate/", {"test_set_path": "x"}),
    Page("evaluate for promotion", "POST", "/registry/{registered_name}/versions/1/evaluate/"),
    Page("sweep page", "GET", "/sweeps/{sweep}/"),
    Page("sweep cancel", "POST", "/sweeps/{sweep}/cancel/"),
    Page("sweep promote the best", "POST", "/sweeps/{sweep}/promote/"),
    Page("webhook page", "GET", "/webhooks/{webhook}/"),
    Page("webhook send test", "POST", "/webhooks/{webhook}/test/"),
    Page("webhook rotate secret", "POST", "/webhooks/{webhook}/rotate-secret/"),
    Page("webhook delete", "POST", "/webhooks/{webhook}/delete/"),
    Page("evaluation page", "GET", "/evaluations/{evaluation}/"),
    Page("evaluation cancel", "POST", "/evaluations/{running_evaluation}/cancel/"),
    Page("evaluation retry", "POST", "/evaluations/{evaluation}/retry/"),
    Page("model deploy to Ollama", "POST", "/models/{model}/deploy/"),
]

PAGE_LISTS = ["/", "/jobs/", "/datasets/", "/models/", "/evaluations/", "/registry/", "/webhooks/", "/sweeps/"]
PAGE_FORMS = [
    Page("job form", "POST", "/jobs/new/", {"name": "x"}),
    Page("evaluation form", "POST", "/evaluations/new/", {"name": "x"}),
    Page("dataset upload form", "POST", "/datasets/", {"name": "x"}),
    Page("token create", "POST", "/accounts/token/create/"),
    Page("token revoke", "POST", "/accounts/token/revoke/"),
]
