from tests.security.conftest import storage_spy, world  # noqa: F401  (the same fixtures, shared)
