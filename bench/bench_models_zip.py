"""ZIP download of a big model through a real uvicorn process; prints one JSON object.

Two storages, each measured against streaming the same objects without zipping in the same run:
- ``s3``: a moto S3 server (subprocess). moto loads a whole object into its own memory to serve it
  (and twice to complete a multipart upload), so its big object is ``BENCH_S3_BIG_MIB`` (default 1024 MiB);
  the baseline is downloading every object straight from the S3 server.
- ``local``: file storage with a ``BENCH_LOCAL_BIG_MIB`` (default 5120 MiB = 5 GiB) member, the ZIP64 case;
  the baseline is a plain HTTP file server (python -m http.server) serving the same files.
Each has 200 small files. Figures: time to headers and to the first body byte, MiB/s and the ratio to the
baseline, the web process's peak RSS growth (VmHWM), and `unzip -t` + Python's zipfile CRC check.
Needs PostgreSQL on 127.0.0.1:5432 (database ``bench_models`` is recreated) and ~6 GiB of free disk.

Figures, 2026-11-29, 2 vCPUs shared with four other busy sessions (1-min load 2.7 → 1.4): S3 1 GiB +
200 small files: ZIP 264 MiB/s vs 211 MiB/s plain (ratio 1.25, medians of 3 alternated runs; 0.60-0.70
single runs before small members were prefetched), first byte 0.19 s, peak RSS growth 32.5 MiB;
local 5 GiB (ZIP64): 490 vs 326 MiB/s (1.51), first byte 0.14 s, RSS growth 31.8 MiB; unzip -t and CRCs pass.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import service_support  # noqa: E402

DB_NAME = "bench_models"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
CHUNK = 16 * 1024 * 1024
SMALL_FILES = 200
S3_BIG_MIB = int(os.environ.get("BENCH_S3_BIG_MIB", "1024"))
LOCAL_BIG_MIB = int(os.environ.get("BENCH_LOCAL_BIG_MIB", "5120"))
S3_REPEAT = int(os.environ.get("BENCH_S3_REPEAT", "3"))  # medians of alternated runs


@contextlib.contextmanager
def process(command, env, log_name):
    log = open(Path(tempfile.gettempdir()) / log_name, "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def big_chunk() -> bytes:
    # Incompressible-looking but cheap to make: weights do not compress, and neither should this.
    return hashlib.shake_256(b"finetune-studio-bench").digest(CHUNK)


def small_files() -> dict[str, bytes]:
    return {
        f"extras/file-{index:03d}.json": json.dumps({"i": index, "pad": "x" * 900}).encode() for index in range(200)
    }


def entry(path: str, size: int, sha: str, crc: int) -> dict:
    from models_app import artifacts

    return artifacts.manifest_entry(path=path, size=size, sha256=sha, crc32=f"{crc:08x}")


def put_s3_objects(prefix: str) -> list[dict]:
    from finetune_studio.objects import bucket

    models = bucket("models")
    models.ensure_exists()
    files = []
    for path, data in small_files().items():
        models.put_bytes(prefix + path, data)
        files.append(entry(path, len(data), hashlib.sha256(data).hexdigest(), zlib.crc32(data)))
    chunk, key = big_chunk(), prefix + "weights/model.safetensors"
    digest, crc = hashlib.sha256(), 0
    upload = models.client.create_multipart_upload(Bucket=models.name, Key=key)
    parts = []
    for number in range(1, max(1, S3_BIG_MIB // 16) + 1):
        response = models.client.upload_part(
            Bucket=models.name, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=chunk
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
        digest.update(chunk)
        crc = zlib.crc32(chunk, crc)
    models.client.complete_multipart_upload(
        Bucket=models.name, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    files.append(entry("weights/model.safetensors", len(chunk) * len(parts), digest.hexdigest(), crc))
    return files


def put_local_objects(root: Path, prefix: str) -> list[dict]:
    base = root / "models" / prefix
    files = []
    for path, data in small_files().items():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(data)
        files.append(entry(path, len(data), hashlib.sha256(data).hexdigest(), zlib.crc32(data)))
    chunk, target = big_chunk(), base / "weights" / "model.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, crc = hashlib.sha256(), 0
    with open(target, "wb") as out:
        for _ in range(LOCAL_BIG_MIB // 16):
            out.write(chunk)
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
    files.append(entry("weights/model.safetensors", target.stat().st_size, digest.hexdigest(), crc))
    return files


def download_zip(url: str, headers: dict, out_path: Path, pid: int) -> dict:
    rss_before = status_kib(pid, "VmRSS")
    hwm_before = status_kib(pid, "VmHWM")
    started = time.perf_counter()
    size = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as response, open(out_path, "wb") as out:
        response.raise_for_status()
        headers_at = time.perf_counter() - started
        first = response.raw.read(1)  # iter_content(n) would wait for n bytes before handing any over
        first_byte_at = time.perf_counter() - started
        out.write(first)
        size += len(first)
        for chunk in response.iter_content(1024 * 1024):
            out.write(chunk)
            size += len(chunk)
        declared = int(response.headers.get("Content-Length", -1))
    elapsed = time.perf_counter() - started
    hwm_after = status_kib(pid, "VmHWM")
    return {
        "bytes": size,
        "content_length_exact": declared == size,
        "time_to_headers_s": round(headers_at, 4),
        "time_to_first_byte_s": round(first_byte_at, 4),
        "seconds": round(elapsed, 2),
        "mib_per_s": round(size / elapsed / 2**20, 1),
        "web_rss_before_mib": round(rss_before / 1024, 1),
        "web_peak_rss_growth_mib": round((hwm_after - max(rss_before, 0)) / 1024, 1),
        "web_hwm_before_mib": round(hwm_before / 1024, 1),
    }


def stream_plain(urls: list[str], out_path: Path) -> dict:
    """The same bytes, unzipped, written to disk like the ZIP is (so both pay the same client-side cost)."""
    started = time.perf_counter()
    size = 0
    with requests.Session() as session, open(out_path, "wb") as out:
        for url in urls:
            with session.get(url, stream=True, timeout=600) as response:
                response.raise_for_status()
                for chunk in response.iter_content(1024 * 1024):
                    out.write(chunk)
                    size += len(chunk)
    out_path.unlink()
    elapsed = time.perf_counter() - started
    return {"bytes": size, "seconds": round(elapsed, 2), "mib_per_s": round(size / elapsed / 2**20, 1)}


def check_archive(path: Path, files: list[dict]) -> dict:
    unzip = subprocess.run(["unzip", "-tqq", str(path)], capture_output=True, text=True)
    started = time.perf_counter()
    with zipfile.ZipFile(path) as zipped:
        bad = zipped.testzip()
        crcs_match = all(int(item["crc32"], 16) == zipped.getinfo(item["path"]).CRC for item in files)
        big = zipped.getinfo("weights/model.safetensors")
        zip64_member = big.file_size > 0xFFFFFFFF
    return {
        "unzip_t_ok": unzip.returncode == 0,
        "zipfile_testzip_ok": bad is None,
        "crcs_match_manifest": crcs_match,
        "members": len(files) + 2,
        "zip64_member": zip64_member,
        "check_seconds": round(time.perf_counter() - started, 1),
    }


def run_case(kind: str, work: Path) -> dict:
    """One storage kind, in its own process: settings (storage backend) are fixed at Django setup."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from models_app import artifacts, selectors
    from models_app.models import RegisteredModel

    env = dict(os.environ)
    if kind == "s3":
        from django.core.management import call_command

        call_command("buckets_create", skip_checks=True, stdout=io.StringIO())  # /healthz: 503 until they exist
        files_for = put_s3_objects
    else:
        local_root = Path(env["LOCAL_STORAGE_ROOT"])
        files_for = lambda prefix: put_local_objects(local_root, prefix)  # noqa: E731
    user, _ = get_user_model().objects.get_or_create(username="bench")
    token, _ = Token.objects.get_or_create(user=user)
    model = RegisteredModel.objects.create(owner=user, name=f"bench {kind}", base_model="bench-base", status="ready")
    model.storage_path = f"users/{user.id}/models/{model.id}/"
    model.files = sorted(files_for(model.storage_path), key=lambda item: item["path"])
    derived = artifacts.summarize(model.files, storage_path=model.storage_path)
    model.total_size = derived["total_size"]
    model.save()
    headers = {"Authorization": f"Token {token.key}"}

    port = service_support.free_port()
    app = "finetune_studio.asgi:application"
    if os.environ.get("BENCH_ASGI_CHUNK_KIB"):
        app = "bench.bench_models_zip:big_send_chunks_application"
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-access-log"]
    if app.endswith("big_send_chunks_application"):
        command.append("--factory")
    base_url = f"http://127.0.0.1:{port}"
    with process(command, {**os.environ, **env}, f"bench_models_zip_{kind}.log") as web:
        service_support.wait_for(f"{base_url}/healthz")
        requests.get(f"{base_url}/api/v1/models/{model.id}", headers=headers, timeout=30).raise_for_status()
        if kind == "s3":
            # Alternated and repeated: on a shared 2-core machine one run of each swung ±30 %.
            plain_urls = list(selectors.model_download_links(model)["files"].values())
            out_path = work / f"{kind}.zip"
            runs = []
            for _ in range(S3_REPEAT):
                runs.append((stream_plain(plain_urls, work / "plain"), None))
                runs.append(
                    (None, download_zip(f"{base_url}/api/v1/models/{model.id}/download", headers, out_path, web.pid))
                )
            baselines = [plain for plain, _ in runs if plain]
            zips = [zipped for _, zipped in runs if zipped]
            baseline = sorted(baselines, key=lambda run: run["mib_per_s"])[len(baselines) // 2]
            zipped = sorted(zips, key=lambda run: run["mib_per_s"])[len(zips) // 2]
            zipped["peak_rss_growth_mib_all_runs"] = max(run["web_peak_rss_growth_mib"] for run in zips)
            baseline["runs_mib_per_s"] = [run["mib_per_s"] for run in baselines]
            zipped["runs_mib_per_s"] = [run["mib_per_s"] for run in zips]
        else:
            # Not the app's /files/ links: under ASGI Django collects a FileResponse's sync iterator whole.
            file_port = service_support.free_port()
            server = [sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(file_port)]
            server += ["-d", str(local_root / "models")]
            with process(server, env, "bench_models_zip_files.log"):
                service_support.wait_for(f"http://127.0.0.1:{file_port}/")
                urls = [f"http://127.0.0.1:{file_port}/{model.file_key(item['path'])}" for item in model.files]
                baseline = stream_plain(urls, work / "plain")
            out_path = work / f"{kind}.zip"
            zipped = download_zip(f"{base_url}/api/v1/models/{model.id}/download", headers, out_path, web.pid)
    result = {
        "big_member_mib": model.files[-1]["size"] // 2**20,
        "small_files": SMALL_FILES,
        "zip": zipped,
        "baseline_without_zip": baseline,
        "throughput_ratio_vs_baseline": round(zipped["mib_per_s"] / baseline["mib_per_s"], 3),
        "archive": check_archive(out_path, model.files),
    }
    out_path.unlink()
    return result


def big_send_chunks_application():
    """The project's ASGI app with Django's response pieces raised from 64 KiB (what-if, BENCH_ASGI_CHUNK_KIB)."""
    from django.core.handlers.asgi import ASGIHandler

    ASGIHandler.chunk_size = int(os.environ["BENCH_ASGI_CHUNK_KIB"]) * 1024
    from finetune_studio.asgi import application

    return application


def run_in_child(kind: str, env: dict, work: Path) -> dict:
    command = [sys.executable, __file__, "--case", kind, "--work", str(work)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} case failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-models-zip-"))
    s3_port = service_support.free_port()
    common = {
        "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
        "DATABASE_URL": DB_URL,
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "STATIC_MANIFEST": "false",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "S3_ACCESS_KEY_ID": "bench",
        "S3_SECRET_ACCESS_KEY": "bench",
    }
    os.environ.update(common)
    os.environ.pop("REDIS_URL", None)
    service_support.recreate_database(DB_NAME, migrate_with=os.environ)
    results: dict = {"note": __doc__.split("\n\n")[0]}
    started = time.perf_counter()
    try:
        moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]
        with process(moto, os.environ.copy(), "bench_models_zip_moto.log"):
            service_support.wait_for(f"http://127.0.0.1:{s3_port}/moto-api/")
            results["s3"] = run_in_child("s3", {**os.environ, "STORAGE_BACKEND": "s3"}, work)
        local_env = {**os.environ, "STORAGE_BACKEND": "local", "LOCAL_STORAGE_ROOT": str(work / "storage")}
        results["local"] = run_in_child("local", local_env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["targets"] = {
        "time_to_first_byte_s": "< 1",
        "throughput_ratio_vs_baseline": ">= 0.9",
        "web_peak_rss_growth_mib": "< 64",
    }
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if "--case" in sys.argv:
        case = sys.argv[sys.argv.index("--case") + 1]
        print(json.dumps(run_case(case, Path(sys.argv[sys.argv.index("--work") + 1]))))
    else:
        main()
