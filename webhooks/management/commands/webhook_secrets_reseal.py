"""``manage.py webhook_secrets_reseal``: seal every webhook secret under the current SECRET_KEY.

Rotating SECRET_KEY: set the new key, keep the old one in SECRET_KEY_FALLBACKS, run this, then drop the old key.
Idempotent. A secret no configured key opens is named (its owner rotates it) and makes the command exit 1.
"""

from django.core.management.base import BaseCommand, CommandError

from webhooks import services


class Command(BaseCommand):
    help = "Seal every webhook secret under the current SECRET_KEY (after rotating it)."

    def handle(self, *args, **options):
        resealed, unreadable = services.webhook_secrets_reseal()
        self.stdout.write(self.style.SUCCESS(f"{resealed} webhook secret(s) sealed under the current SECRET_KEY."))
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} webhook secret(s) open under no configured key (webhooks "
                f"{', '.join(map(str, unreadable[:20]))}): add the old key to SECRET_KEY_FALLBACKS and run again, "
                "or have their owners rotate them"
            )
