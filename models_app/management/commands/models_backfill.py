from django.core.management.base import BaseCommand

from models_app import services


class Command(BaseCommand):
    help = "Create the model of every succeeded job that has none (jobs that succeeded before auto-creation)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--include-empty",
            action="store_true",
            help="Also create models for jobs whose artifact prefix is empty (skipped by default).",
        )

    def handle(self, *args, include_empty: bool = False, **options):
        report = services.models_backfill(include_empty=include_empty)
        for model_id in report["created"]:
            self.stdout.write(f"created model {model_id}")
        for job_id in report["skipped_empty"]:
            self.stdout.write(f"skipped job {job_id}: no artifacts under its prefix (use --include-empty)")
        for job_id, reason in report["failed"].items():
            self.stderr.write(f"job {job_id} failed: {reason}")
        summary = (
            f"{len(report['created'])} created, {len(report['skipped_empty'])} skipped, {len(report['failed'])} failed"
        )
        self.stdout.write(self.style.SUCCESS(summary) if not report["failed"] else self.style.WARNING(summary))
        if report["failed"]:
            raise SystemExit(1)
