"""Trainers that ship with the studio. Operators add more in the admin.

Each definition module exposes DEFINITION = {name, description, command, hyperparameter_schema,
required_modules, loads_base_model, presets, queue, timeout_seconds} and optionally takes_validation_dataset,
record_formats (the dataset formats it trains on; absent: any) and takes_initial_adapter (it reads
INITIAL_ADAPTER_PATH: a job may train a registry version further).
``{python}`` in a command stands for the worker's interpreter.
"""

from .example.definition import DEFINITION as EXAMPLE
from .lora_dpo.definition import DEFINITION as LORA_DPO
from .lora_sft.definition import DEFINITION as LORA_SFT

EXTERNAL = {
    "name": "external",
    "description": "Runs nothing here: training happens elsewhere and reports logs, artifacts and its end "
    "through the API or the logs bucket (see docs/trainers.md).",
    "command": [],
    "hyperparameter_schema": {},
    "required_modules": [],
    "loads_base_model": False,
    "presets": {},
    "queue": "training",
    "timeout_seconds": 7 * 24 * 3600,
}

BUILTIN_TRAINERS = [EXTERNAL, EXAMPLE, LORA_SFT, LORA_DPO]
