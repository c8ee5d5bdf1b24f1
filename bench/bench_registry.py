"""Alias resolution with 10,000 versions of one name, through a real uvicorn process on PostgreSQL;
then (``--sweep`` in a child process) a sweep's wall time against the work its trials did.

A fresh database ``bench_registry``: one owner, one registered name with BENCH_VERSIONS versions
(bulk-inserted) and ``champion`` pointing at the middle one; another name of 10 versions as the
small case. Each scenario is requested BENCH_REQUESTS times after a warm-up. Prints one JSON object:
p50/p95/max in ms, and the ratio of alias resolution to the plain model detail of the same version
(the baseline: resolution should cost one alias lookup on top of it). Target: resolve p95 < 20 ms.
Needs PostgreSQL on 127.0.0.1:5432.

Figures, 2026-12-01, 2 vCPUs shared with other busy sessions (1-min load 9.5): resolve p50 21 ms,
p95 51 ms; the plain model detail of the same version p95 58 ms (ratio 0.89); 10 versions p95 60 ms,
so the cost does not grow with versions (three queries: token, alias+name+version in one join,
the lineage's evaluations). The 20 ms target was not met on this loaded machine; the baseline
missed it by as much: the time is the shared CPUs', not the registry's.
Re-measured 2026-12-01 22:27 and 22:40 UTC on a quieter machine (1-min load 0.6 and 2.1): resolve p95 17.3 ms
and 14.4 ms (met), the model detail baseline 18.8 and 17.8 ms (ratios 0.92 and 0.81); still three queries
(guarded by test_registry_aliases), so nothing was cut.

Sweep (20 trials, concurrency 4, same machine): wall 55.2 s against an ideal 34.1 s (ratio 1.62) while
the in-memory broker polled once a second (≈ 1 s at each of the five task hops of a trial); with
``polling_interval`` 0.05 s in standalone settings: wall 40.4 s, ideal 36.8 s, ratio 1.10 (target ≤ 1.2).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import service_support  # noqa: E402

DB_NAME = "bench_registry"
LOG_NAME = "bench_registry_web.log"
VERSIONS = int(os.environ.get("BENCH_VERSIONS", "10000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))


def seed() -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from models_app.models import ModelAlias, RegisteredModel, RegisteredName

    owner = get_user_model().objects.create_user(username="owner")
    token = Token.objects.create(user=owner).key
    manifest = [
        {"path": "lora_adapters/adapter_model.safetensors", "size": 10, "sha256": "0" * 64, "crc32": "0" * 8},
        {"path": "lora_adapters/adapter_config.json", "size": 10, "sha256": "1" * 64, "crc32": "1" * 8},
    ]
    started = time.perf_counter()
    ids = {}
    for name, count in (("contracts", VERSIONS), ("small", 10)):
        registered = RegisteredName.objects.create(owner=owner, name=name, last_version=count)
        RegisteredModel.objects.bulk_create(
            [
                RegisteredModel(
                    owner=owner,
                    registered_name=registered,
                    version=version,
                    name=f"{name} run {version}",
                    base_model="tiny",
                    status="ready",
                    files=manifest,
                    total_size=20,
                    storage_path=f"users/{owner.id}/models/{name}-{version}/",
                    lora_adapters_path=f"users/{owner.id}/models/{name}-{version}/lora_adapters/",
                    training_metrics={"final": {"loss": 0.4}},
                )
                for version in range(1, count + 1)
            ],
            batch_size=2000,
        )
        champion = RegisteredModel.objects.get(registered_name=registered, version=count // 2)
        ModelAlias.objects.create(registered_name=registered, alias="champion", model=champion)
        ids[name] = champion.id
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE models")
    return {"token": token, "ids": ids, "insert_seconds": round(time.perf_counter() - started, 1)}


def measure(base_url: str, path: str, token: str) -> dict:
    return service_support.latency(base_url, path, token, count=REQUESTS, warmup=20, digits=2)[0]


SWEEP_DB = "bench_registry_sweep"
SWEEP_TRIALS = int(os.environ.get("BENCH_SWEEP_TRIALS", "20"))
SWEEP_CONCURRENCY = 4


def sweep_main() -> None:
    """20 trials of the ``example`` trainer on the sample set, concurrency 4, each evaluated against the
    base on the sample test set (an Ollama-speaking test server answers, 5 ms per request), run by the
    standalone in-process worker (threads, memory broker). The sweep's wall time (created → finished)
    is compared with the sum of its jobs' (started → finished) and evaluations' (started → completed)
    times ÷ 4, the ideal packing. Target: ratio ≤ 1.2."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from finetune_studio.records import iter_records
    from finetune_studio.standalone import start_in_process_services
    from jobs import services as job_services
    from sweeps import services as sweep_services
    from sweeps.models import Sweep
    from tests.support.ollama_server import OllamaServer, answer_from_mapping

    samples = ROOT / "samples" / "contracts"
    truth = {}
    for record in iter_records([(samples / "test.jsonl").read_bytes()], "jsonl"):
        truth[record.text] = record.label
    ollama = OllamaServer(latency=0.005).start()
    from django.conf import settings

    settings.OLLAMA_URL = ollama.url
    labels = sorted(set(truth.values()))
    ollama.add_model("tiny", answer=labels[0])
    for version in range(1, SWEEP_TRIALS + 1):
        ollama.add_model(f"bench-sweep-v{version}", answer=answer_from_mapping(truth, default=labels[0]))
    owner = get_user_model().objects.create_user(username="sweeper")
    train = job_services.dataset_create(
        owner=owner, uploaded_file=SimpleUploadedFile("train.jsonl", (samples / "train.jsonl").read_bytes())
    )
    test = job_services.dataset_create(
        owner=owner, uploaded_file=SimpleUploadedFile("test.jsonl", (samples / "test.jsonl").read_bytes())
    )
    start_in_process_services()
    sweep = sweep_services.sweep_create(
        owner=owner,
        name="bench",
        trainer_name="example",
        dataset_id=train.id,
        base_model="tiny",
        strategy="random",
        search_space={"epochs": {"min": 3, "max": 12}, "learning_rate": {"min": 0.05, "max": 1.0, "log": True}},
        n_trials=SWEEP_TRIALS,
        seed=17,
        concurrency=SWEEP_CONCURRENCY,
        test_set_path=test.path,
        registered_name="bench-sweep",
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        sweep.refresh_from_db()
        if sweep.status != Sweep.Status.RUNNING:
            break
        time.sleep(0.5)
    trials = list(sweep.trials.select_related("job", "evaluation"))
    job_seconds = [(t.job.finished_at - t.job.started_at).total_seconds() for t in trials if t.job and t.job.started_at]
    evaluation_seconds = [
        (t.evaluation.completed_at - t.evaluation.started_at).total_seconds()
        for t in trials
        if t.evaluation and t.evaluation.started_at and t.evaluation.completed_at
    ]
    wall = (sweep.finished_at - sweep.created_at).total_seconds() if sweep.finished_at else None
    ideal = (sum(job_seconds) + sum(evaluation_seconds)) / SWEEP_CONCURRENCY
    ollama.stop()
    print(
        json.dumps(
            {
                "trials": SWEEP_TRIALS,
                "concurrency": SWEEP_CONCURRENCY,
                "status": sweep.status,
                "jobs_succeeded": sum(1 for t in trials if t.job and t.job.status == "succeeded"),
                "evaluations_completed": sum(1 for t in trials if t.evaluation and t.evaluation.status == "completed"),
                "wall_seconds": round(wall, 2) if wall else None,
                "sum_job_seconds": round(sum(job_seconds), 2),
                "sum_evaluation_seconds": round(sum(evaluation_seconds), 2),
                "ideal_seconds_sum_over_4": round(ideal, 2),
                "wall_over_ideal": round(wall / ideal, 3) if wall and ideal else None,
                "target": "wall_over_ideal <= 1.2",
            }
        )
    )
    os._exit(0)  # the in-process worker's threads do not stop by themselves


def run_sweep_child() -> dict:
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{SWEEP_DB}"}
    env["LOCAL_STORAGE_ROOT"] = tempfile.mkdtemp(prefix="bench-sweep-")
    service_support.recreate_database(SWEEP_DB, migrate_with=env)
    done = subprocess.run(
        [sys.executable, __file__, "--sweep"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    shutil.rmtree(env["LOCAL_STORAGE_ROOT"], ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    return json.loads(lines[-1])


def main() -> None:
    env = service_support.local_service_env(DB_NAME, storage_prefix="bench-registry-")
    os.environ.update(env)
    service_support.recreate_database(DB_NAME, migrate_with=env)
    seeded = seed()
    try:
        with service_support.web_server(env, log_name=LOG_NAME) as base_url:
            scenarios = {
                "resolve_alias_10k_versions": "/api/v1/registry/contracts/aliases/champion",
                "model_detail_same_version_baseline": f"/api/v1/models/{seeded['ids']['contracts']}",
                "resolve_alias_10_versions": "/api/v1/registry/small/aliases/champion",
                "name_detail_newest_100_of_10k": "/api/v1/registry/contracts",
            }
            results = {name: measure(base_url, path, seeded["token"]) for name, path in scenarios.items()}
    finally:
        shutil.rmtree(env["LOCAL_STORAGE_ROOT"], ignore_errors=True)
    sweep = run_sweep_child() if os.environ.get("BENCH_SKIP_SWEEP") != "1" else None
    resolve = results["resolve_alias_10k_versions"]
    baseline = results["model_detail_same_version_baseline"]
    print(
        json.dumps(
            {
                "versions": VERSIONS,
                "requests_per_scenario": REQUESTS,
                "insert_seconds": seeded["insert_seconds"],
                "target": "resolve_alias_10k_versions p95 < 20 ms",
                "met": resolve["p95_ms"] < 20,
                "resolve_over_model_detail_p95": round(resolve["p95_ms"] / baseline["p95_ms"], 2),
                "scenarios": results,
                "sweep": sweep,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sys.path.insert(0, str(ROOT))
        sweep_main()
    else:
        main()
