from django.core.management.base import BaseCommand

from accounts.services import admin_ensure


class Command(BaseCommand):
    help = "Create a first admin account with a random password if no superuser exists yet."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        password = admin_ensure(username=username)
        if password is None:
            self.stdout.write("An admin account already exists; log in with it (or: manage.py changepassword).")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"\nCreated the first admin account.\n  user:     {username}\n  password: {password}\n"
                "Log in at /accounts/login/ on the address printed below, and change it under Admin → Users.\n"
            )
        )
