"""The ids OpenAI's API shows for the studio's objects: ``file-<dataset>``, ``ftjob-<job>``, ``ftevent-<job>-<seq>``,
and for a fine-tuned model its registry version, ``<registered name>:v<version>`` (``model-<id>`` when unnamed).

They are the studio's own numbers with OpenAI's prefixes, so a script's ids and the studio's pages name the
same objects (``file-12`` is dataset #12). Parsing never raises: a malformed id is ``None`` (a 404 or a 400).
"""

import re

FILE_PREFIX = "file-"
JOB_PREFIX = "ftjob-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt-"
RESULTS_PREFIX = "file-results-"  # a succeeded job's step metrics as CSV (OpenAI's result_files)
_NUMBER = re.compile(r"^[1-9][0-9]{0,17}$")
_EVENT = re.compile(r"^ftevent-([1-9][0-9]{0,17})-([1-9][0-9]{0,17})$")
_VERSION = re.compile(r"^(.+):v([1-9][0-9]{0,8})$")  # registered names hold no ':' (registry_names)
MODEL_PREFIX = "model-"


def file_id(dataset_id: int) -> str:
    return f"{FILE_PREFIX}{dataset_id}"


def results_file_id(job: int) -> str:
    return f"{RESULTS_PREFIX}{job}"


def parse_results_file_id(value: str) -> int | None:
    return _number(value, RESULTS_PREFIX)


def job_id(number: int) -> str:
    return f"{JOB_PREFIX}{number}"


def checkpoint_id(model_id: int) -> str:
    return f"{CHECKPOINT_PREFIX}{model_id}"


def event_id(job: int, seq: int) -> str:
    return f"{EVENT_PREFIX}{job}-{seq}"


def _number(value: str, prefix: str) -> int | None:
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    rest = value[len(prefix) :]
    return int(rest) if _NUMBER.match(rest) else None


def parse_file_id(value: str) -> int | None:
    return _number(value, FILE_PREFIX)


def parse_job_id(value: str) -> int | None:
    return _number(value, JOB_PREFIX)


def parse_event_id(value: str) -> tuple[int, int] | None:
    """(job, seq) of an event id."""
    match = _EVENT.match(value) if isinstance(value, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def model_name(model) -> str:
    """A registry model as OpenAI's ``fine_tuned_model``: its registered name and version."""
    if model.registered_name_id and model.version:
        return f"{model.registered_name.name}:v{model.version}"
    return f"{MODEL_PREFIX}{model.id}"


def initial_model_name(initial: dict) -> str:
    """The fine-tuned model a job trains further (``Job.initial_adapter``) by the name a job was created with."""
    return initial["name"] if _VERSION.match(initial["name"]) else f"{MODEL_PREFIX}{initial['model_id']}"


def parse_model_name(value: str) -> tuple[str, int] | int | None:
    """(registered name, version), or the id of an unnamed model, or None for anything else (a base's name)."""
    if not isinstance(value, str):
        return None
    match = _VERSION.match(value)
    if match:
        return match.group(1), int(match.group(2))
    return _number(value, MODEL_PREFIX)
