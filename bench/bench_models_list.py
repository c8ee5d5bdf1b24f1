"""GET /api/v1/models latency with 100,000 models in PostgreSQL, through a real uvicorn process.

Rows are bulk-inserted with COPY (then VACUUM ANALYZE, as autovacuum would) into a freshly made
database ``bench_models_list``: one owner holds 100,000 models, another 1,000. Each scenario is
requested 100 times after a warm-up; prints one JSON object of p50/p95/max in milliseconds.
Target: p95 < 50 ms for the plain list. Needs PostgreSQL on 127.0.0.1:5432.

Figures (p95 ms), 2026-11-29, 2 vCPUs shared with four other busy sessions (1-min load 3-4.8):
default 44, page_size=200 57, page 1000 44 (78 before), base_model+status 62, date range 44,
search 33 (221 before: pg_trgm GIN indexes), ordering=-total_size 37 (110 before), staff 37,
small owner 29. The unchanged scenarios moved with the load (27-39 ms in the earlier run at load 2).
"""

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import service_support  # noqa: E402

DB_NAME = "bench_models_list"
LOG_NAME = "bench_models_list_web.log"
MODELS = int(os.environ.get("BENCH_MODELS", "100000"))
DEEP_PAGE = max(1, min(1000, MODELS // 50))  # page 1000 of 50 at full size; smaller runs read their last pages
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "100"))


def seed() -> dict:
    """Users and tokens through Django; the models by COPY (a per-row save would take minutes)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from models_app.models import RegisteredModel

    users = get_user_model().objects
    heavy, light = users.create_user(username="heavy"), users.create_user(username="light")
    staff = users.create_user(username="staff", is_staff=True)
    tokens = {user.username: Token.objects.create(user=user).key for user in (heavy, light, staff)}
    bases = ["tiny-llama", "gemma-2b", "llama3.2:3b", "qwen2.5:7b"]
    statuses = ["ready", "ready", "ready", "failed", "archived", "pending"]
    manifest = [{"path": "lora_adapters/adapter_model.safetensors", "size": 1, "sha256": "0" * 64, "crc32": "0" * 8}]
    metrics = {"final": {"loss": 0.4}, "loss_history": [{"step": s, "loss": 1 / s} for s in range(1, 50)]}
    # Every column of the table, from the model: the values below, else the field's default (a field added
    # later gets its default instead of breaking the COPY).
    fields = [field for field in RegisteredModel._meta.concrete_fields if not field.primary_key]
    defaults = {field.attname: field.get_default() for field in fields}
    buffer = io.StringIO()
    start = time.time() - MODELS * 60
    for index in range(MODELS + 1000):
        created = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(start + index * 60))
        values = {
            **defaults,
            "owner_id": heavy.id if index < MODELS else light.id,
            "name": f"model {index}",
            "description": f"fine-tune number {index}",
            "base_model": bases[index % len(bases)],
            "type": "lora",
            "storage_path": f"users/{heavy.id if index < MODELS else light.id}/models/{index}/",
            "files": manifest,
            "training_metrics": metrics,
            "status": statuses[index % len(statuses)],
            "total_size": 1000 + index,
            "created_at": created,
            "updated_at": created,
        }
        buffer.write("\t".join(_copy_text(field, values[field.attname]) for field in fields) + "\n")
    columns = ", ".join(field.column for field in fields)
    buffer.seek(0)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY models ({columns}) FROM STDIN") as copy:
            while data := buffer.read(1 << 20):
                copy.write(data)
        # What autovacuum does shortly after a bulk load: the visibility map lets COUNT(*) use an index-only scan.
        cursor.execute("VACUUM ANALYZE models")
    return {"tokens": tokens, "insert_seconds": round(time.perf_counter() - started, 1)}


def _copy_text(field, value) -> str:
    """``value`` in COPY's text format (the values here hold no tab, newline or backslash)."""
    from django.db.models import JSONField

    if value is None:
        return "\\N"
    if isinstance(field, JSONField):
        return json.dumps(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def measure(base_url: str, path: str, token: str) -> dict:
    summary, response = service_support.latency(base_url, path, token, count=REQUESTS, warmup=10)
    return {**summary, "results": len(response.json()["results"]), "count": response.json()["count"]}


def main() -> None:
    env = service_support.local_service_env(DB_NAME, storage_prefix="bench-models-list-")
    os.environ.update(env)
    service_support.recreate_database(DB_NAME, migrate_with=env)
    seeded = seed()
    tokens = seeded["tokens"]
    try:
        with service_support.web_server(env, log_name=LOG_NAME) as base_url:
            scenarios = {
                "list_default_page": ("/api/v1/models", "heavy"),
                "list_page_size_200": ("/api/v1/models?page_size=200", "heavy"),
                "list_deep_page_1000": (f"/api/v1/models?page={DEEP_PAGE}", "heavy"),
                "list_page_without_count_cost_light_owner": ("/api/v1/models?page_size=200", "light"),
                "filter_base_model_status": ("/api/v1/models?base_model=gemma-2b&status=ready", "heavy"),
                "filter_date_range": ("/api/v1/models?date_from=2020-01-01&date_to=2100-01-01", "heavy"),
                "search_name": ("/api/v1/models?search=number%209999", "heavy"),
                "ordering_total_size": ("/api/v1/models?ordering=-total_size", "heavy"),
                "staff_all_owners": ("/api/v1/models", "staff"),
                "small_owner_among_100k": ("/api/v1/models", "light"),
            }
            results = {name: measure(base_url, path, tokens[user]) for name, (path, user) in scenarios.items()}
    finally:
        shutil.rmtree(env["LOCAL_STORAGE_ROOT"], ignore_errors=True)
    print(
        json.dumps(
            {
                "models": MODELS + 1000,
                "requests_per_scenario": REQUESTS,
                "copy_insert_seconds": seeded["insert_seconds"],
                "target": "list_default_page p95 < 50 ms",
                "scenarios": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
