from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        # Webhooks sit at the top: they subscribe to the lower apps' signals, which never import us.
        from . import receivers

        receivers.connect()
