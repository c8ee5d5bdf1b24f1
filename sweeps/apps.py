from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "sweeps"

    def ready(self) -> None:
        # Sweeps sit above jobs, the registry and evaluations and follow their signals; none of them imports us.
        from . import receivers

        receivers.connect()
