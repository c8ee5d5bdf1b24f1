import pytest

from jobs import hyperparameters, services
from jobs.models import Trainer
from trainers.builtin import BUILTIN_TRAINERS

SCHEMA = {
    "epochs": {"type": "integer", "default": 3, "minimum": 1, "maximum": 10},
    "lr": {"type": "number", "default": 0.1, "minimum": 0},
    "shuffle": {"type": "boolean", "default": True},
    "note": {"type": "string", "default": ""},
    "loss": {"type": "enum", "choices": ["a", "b"], "default": "a"},
    "tags": {"type": "array", "items": "string", "default": []},
    "seed": {"type": "integer"},
}


def test_it_fills_defaults_and_keeps_given_values():
    cleaned, errors = hyperparameters.validate(SCHEMA, {"epochs": 5, "seed": 7, "tags": ["x"]})
    assert errors == {}
    assert cleaned == {"epochs": 5, "lr": 0.1, "shuffle": True, "note": "", "loss": "a", "tags": ["x"], "seed": 7}


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"epochs": 0}, "epochs", "must be at least 1"),
        ({"epochs": 11}, "epochs", "must be at most 10"),
        ({"epochs": 2.5}, "epochs", "must be a whole number"),
        ({"epochs": True}, "epochs", "must be a whole number"),
        ({"lr": "fast"}, "lr", "must be a number"),
        ({"lr": float("nan")}, "lr", "must be a number"),
        ({"shuffle": "yes"}, "shuffle", "must be true or false"),
        ({"loss": "c"}, "loss", "must be one of: a, b"),
        ({"tags": "x,y"}, "tags", "must be a list of strings"),
        ({"note": 3}, "note", "must be a string"),
        ({"note": "a\x00b"}, "note", "must not contain a NUL character"),
        ({"tags": ["ok", "a\x00"]}, "tags", "items must not contain a NUL character"),
        ({"bogus": 1}, "bogus", "unknown hyperparameter"),
        ({}, "seed", "this hyperparameter is required"),
    ],
)
def test_it_refuses_bad_values_per_field(values, field, message):
    values = {"seed": 1, **values} if field != "seed" else values
    _, errors = hyperparameters.validate(SCHEMA, values)
    assert message in errors[field][0]


def test_environment_variables_are_uppercase_and_typed():
    env = hyperparameters.environment({"epochs": 3, "shuffle": False, "note": "a b; rm -rf /", "tags": ["x"]})
    assert env == {"HP_EPOCHS": "3", "HP_SHUFFLE": "false", "HP_NOTE": "a b; rm -rf /", "HP_TAGS": '["x"]'}


@pytest.mark.parametrize(
    "schema",
    [
        {"Bad-Name": {"type": "integer"}},
        {"x": {"type": "float"}},
        {"x": {"type": "enum"}},
        {"x": {"type": "integer", "default": "1"}},
        {"x": {"type": "string", "default": "a\x00"}},
        {"x": {"type": "enum", "choices": ["a", "b\x00"]}},
    ],
)
def test_it_refuses_unusable_schemas(schema):
    with pytest.raises(hyperparameters.SchemaError):
        hyperparameters.check_schema(schema)


def test_builtin_definitions_have_valid_schemas():
    for definition in BUILTIN_TRAINERS:
        hyperparameters.check_schema(definition["hyperparameter_schema"])


@pytest.mark.django_db
def test_builtin_trainers_exist_after_migrate_and_edits_are_kept():
    assert {"external", "example", "lora-sft"} <= set(Trainer.objects.values_list("name", flat=True))
    Trainer.objects.filter(name="example").update(description="operator's words", timeout_seconds=5)
    Trainer.objects.filter(name="external").delete()
    assert services.trainer_sync_builtin() == ["external"]
    example = Trainer.objects.get(name="example")
    assert (example.description, example.timeout_seconds) == ("operator's words", 5)


@pytest.mark.django_db
def test_the_api_lists_trainers_with_availability(alice_api):
    Trainer.objects.create(name="needs-missing", required_modules=["no_such_module_xyz", "json"])
    Trainer.objects.create(name="switched-off", enabled=False)
    trainers = {t["name"]: t for t in alice_api.get("/api/v1/trainers").json()["results"]}
    assert trainers["example"]["available"] is True
    assert trainers["example"]["hyperparameter_schema"]["epochs"]["default"] == 10
    assert trainers["needs-missing"]["available"] is False
    assert (
        trainers["needs-missing"]["unavailable_reason"] == "needs Python modules not installed here: no_such_module_xyz"
    )
    assert trainers["switched-off"]["unavailable_reason"] == "disabled by an operator"


@pytest.mark.django_db
def test_anonymous_cannot_list_trainers(anon_api):
    assert anon_api.get("/api/v1/trainers/").status_code == 401
