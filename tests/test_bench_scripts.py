"""`make bench` keeps working: the service benchmarks run end to end on tiny sizes and print their JSON.

They build their own PostgreSQL databases and web processes, so a schema change that breaks their seeding
(a COPY missing a new column) or a start-up check they do not satisfy fails here, not on the next
measurement. Their figures at these sizes mean nothing; their keys and their checks do.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, **sizes: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE", "TEST_"))}
    env.update(sizes)
    done = subprocess.run(
        [sys.executable, f"bench/{script}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_models_list_benchmark_seeds_every_column_and_measures_each_scenario():
    report = run_bench("bench_models_list.py", BENCH_MODELS="300", BENCH_REQUESTS="3")
    scenarios = report["scenarios"]
    assert report["models"] == 1300 and len(scenarios) == 10
    assert scenarios["list_default_page"]["count"] == 300 and scenarios["staff_all_owners"]["count"] == 1300
    assert all(row["p95_ms"] > 0 for row in scenarios.values())


def test_the_registry_benchmark_resolves_aliases_against_its_baseline():
    report = run_bench("bench_registry.py", BENCH_VERSIONS="50", BENCH_REQUESTS="3", BENCH_SKIP_SWEEP="1")
    assert report["versions"] == 50 and report["resolve_over_model_detail_p95"] > 0
    assert set(report["scenarios"]) >= {"resolve_alias_10k_versions", "model_detail_same_version_baseline"}


def test_the_zip_benchmark_streams_a_checked_archive_from_both_storages():
    report = run_bench("bench_models_zip.py", BENCH_S3_BIG_MIB="32", BENCH_LOCAL_BIG_MIB="32", BENCH_S3_REPEAT="1")
    for kind in ("s3", "local"):
        archive = report[kind]["archive"]
        assert archive["unzip_t_ok"] and archive["zipfile_testzip_ok"] and archive["crcs_match_manifest"], archive
        assert report[kind]["zip"]["content_length_exact"] is True


def test_the_dpo_scoring_benchmark_compares_both_ways_of_scoring_the_same_answers():
    sizes = {"BENCH_DPO_VOCAB": "2000", "BENCH_DPO_HIDDEN": "64", "BENCH_DPO_PROMPT": "64", "BENCH_DPO_ANSWER": "8"}
    report = run_bench("bench_dpo_scoring.py", BENCH_DPO_STEPS="1", BENCH_DPO_PAIRS="2", **sizes)
    assert report["logps_max_abs_difference"] < 0.01
    for variant in ("full_logits", "chunked"):
        assert report[variant]["peak_step_memory_mib"] >= 0 and report[variant]["seconds_per_step"] > 0
    assert report["speedup"] > 0 and "peak_step_memory_ratio" in report
