"""``manage.py build_demo_base``: the tiny Llama base the quick start fine-tunes (trainers/demo_base.py)."""

import importlib.util
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finetune_studio.base_models import base_model_catalogue


class Command(BaseCommand):
    help = (
        "Build a tiny Llama-architecture base model with a tokenizer trained here on the sample dataset "
        "(samples/contracts/train*.jsonl, or synthetic clauses without them). Seconds, no download."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--output",
            default=str(settings.DEMO_BASE_DIR),
            help="folder to create (default: %(default)s)",
        )
        parser.add_argument("--force", action="store_true", help="replace the folder if it exists")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, output: str, force: bool, seed: int, **options):
        missing = [name for name in ("torch", "transformers", "tokenizers") if importlib.util.find_spec(name) is None]
        if missing:
            raise CommandError(
                f"the training extra is not installed (missing: {', '.join(missing)}). Install it with: "
                "pip install torch==2.13.0 && pip install -r requirements-train.txt"
            )
        from trainers.demo_base import build_demo_base, corpus_from_files

        target = Path(output).expanduser().resolve()
        if target.exists() and not force:
            raise CommandError(f"{target} already exists: use --force to rebuild it")
        # The training split only: a tokenizer fitted to the held-out test text would flatter later evaluations.
        samples = sorted((Path(settings.BASE_DIR) / "samples" / "contracts").glob("train*.jsonl"))
        texts = corpus_from_files(samples) if samples else None
        build_demo_base(target, texts=texts, seed=seed, force=force)
        source = ", ".join(path.name for path in samples) if samples else "synthetic contract clauses"
        self.stdout.write(self.style.SUCCESS(f"Demo base model built in {target} (tokenizer trained on {source})."))
        self.stdout.write(self._how_jobs_name_it(target))

    def _how_jobs_name_it(self, target: Path) -> str:
        # A job names a base, never a folder under var/ (finetune_studio/base_models.py): say which name works.
        names = [entry.name for entry in base_model_catalogue() if entry.path and entry.path.resolve() == target]
        if names:
            return f"Jobs name it {names[0]!r} (base_model), e.g. with the lora-sft trainer."
        return (
            f"Jobs cannot name this folder yet: set DEMO_BASE_DIR={target} (then it is 'demo-base'), declare it in "
            "BASE_MODELS, or build it inside BASE_MODELS_DIR."
        )
