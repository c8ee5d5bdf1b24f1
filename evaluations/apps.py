from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "evaluations"

    def ready(self) -> None:
        # The registry (below us) asks for promotion evidence through its provider registry.
        from models_app.evidence import register_evidence_provider

        from .evidence import evaluation_evidence

        register_evidence_provider(evaluation_evidence)
