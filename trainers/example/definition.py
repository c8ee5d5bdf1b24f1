# Filled in by the jobs work (issue 3): the example trainer's definition.
DEFINITION = {
    "name": "example",
    "description": "",
    "command": ["{python}", "-m", "trainers.example"],
    "hyperparameter_schema": {},
    "required_modules": [],
    "queue": "training",
    "timeout_seconds": 3600,
}
