from django.core.management.base import BaseCommand, CommandError

from jobs.models import Job
from runner.services import run_job


class Command(BaseCommand):
    help = "Run one queued job's trainer in the foreground (what a training worker does), e.g. to debug a trainer."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, job_id: int, **options):
        if not Job.objects.filter(id=job_id).exists():
            raise CommandError(f"no job #{job_id}")
        outcome = run_job(job_id=job_id)
        job = Job.objects.get(id=job_id)
        self.stdout.write(
            f"job #{job_id}: {outcome} (status {job.status}){': ' + job.error_message if job.error_message else ''}"
        )
        if outcome == "not-claimed":
            raise CommandError(f"job #{job_id} is {job.status}, not queued: nothing was run")
