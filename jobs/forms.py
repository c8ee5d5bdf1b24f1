from django import forms

from finetune_studio.base_models import DEMO_BASE, base_model_catalogue

from . import hyperparameters
from .models import Dataset, Trainer
from .selectors import trainers_with_availability

HP_PREFIX = "hp_"


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        help_text="JSON lines, a JSON array or CSV: OpenAI chat (messages), ShareGPT (conversations), Alpaca "
        "(instruction/input/output), prompt/completion, or text/label for classification. One format per file."
    )
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")


def default_base_model() -> str:
    """The form's first choice: the demo base when it is built, else the catalogue's first entry."""
    names = [entry.name for entry in base_model_catalogue()]
    return DEMO_BASE if DEMO_BASE in names else (names[0] if names else "")


class DatasetPreviewForm(forms.Form):
    """The dataset page's query: which base renders the records, how many, and the trainer's max_length."""

    base = forms.ChoiceField(required=False)
    records = forms.IntegerField(min_value=1, max_value=50, required=False, initial=3)
    max_length = forms.IntegerField(min_value=16, max_value=32768, required=False, initial=512)

    def __init__(self, *args, bases: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base"].choices = [(name, name) for name in bases]


class DatasetSplitForm(forms.Form):
    test_fraction = forms.FloatField(min_value=0.01, max_value=0.9, initial=0.2, help_text="Share for the test set.")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=42, help_text="Same seed, same split.")


class JobForm(forms.Form):
    """The new-job form: fixed fields plus one field per hyperparameter of the chosen trainer."""

    name = forms.CharField(max_length=200)
    base_model = forms.CharField(
        max_length=200,
        help_text="Pick one of the studio's base models, or give a folder inside BASE_MODELS_DIR "
        "(trainers that only record the name, like example, take any name).",
    )
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False)
    validation_dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(),
        required=False,
        empty_label="None: hold out validation_fraction of the training records",
        help_text="Validate on a dataset of its own (for example the validation file you used elsewhere).",
    )
    trainer = forms.ChoiceField()
    # A registry version whose adapter the job trains further (the model page's Train further); empty: a new one.
    initial_model = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    registered_name = forms.CharField(
        max_length=100,
        required=False,
        help_text="The registry name its model becomes a version of (default: from the job's name).",
    )

    def __init__(self, *args, user, trainer: Trainer | None, base_model: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.base_model_names = [entry.name for entry in base_model_catalogue()]
        self.fields["dataset"].queryset = Dataset.objects.filter(owner=user)
        self.fields["validation_dataset"].queryset = Dataset.objects.filter(owner=user)
        choices = []
        self.unavailable: dict[str, str] = {}
        for candidate, available, reason in trainers_with_availability():
            label = candidate.name if available else f"{candidate.name} (unavailable: {reason})"
            choices.append((candidate.name, label))
            if not available:
                self.unavailable[candidate.name] = reason
        self.fields["trainer"].choices = choices
        self.trainer = trainer
        self.schema = trainer.hyperparameter_schema if trainer else {}
        # The base's preset (Trainer.presets) is what the form proposes; any value may still be changed.
        self.preset = (trainer.presets or {}).get(base_model, {}) if trainer else {}
        self.preset_base = base_model if self.preset else ""
        if trainer is not None and trainer.record_formats:
            # Only the datasets it can train on; the service refuses the others all the same.
            for field in ("dataset", "validation_dataset"):
                self.fields[field].queryset = self.fields[field].queryset.filter(format__in=trainer.record_formats)
            takes = trainer.record_formats_display()
            self.fields[
                "dataset"
            ].help_text = f"{trainer.name} trains on {takes} records: only such datasets are listed."
        for name, spec in self.schema.items():
            if name in self.preset:
                spec = {**spec, "default": self.preset[name]}
            self.fields[HP_PREFIX + name] = _field_for(name, spec)

    def hyperparameter_fields(self):
        return [self[HP_PREFIX + name] for name in self.schema]

    def hyperparameter_values(self) -> dict:
        """Form text turned into JSON values; the service validates them against the schema."""
        values = {}
        for name, spec in self.schema.items():
            raw = self.data.get(HP_PREFIX + name)
            if spec["type"] != "boolean" and (raw is None or raw == ""):
                continue  # left empty: the default applies
            values[name] = hyperparameters.from_form_value(spec, raw)
        return values


def _field_for(name: str, spec: dict) -> forms.Field:
    label = name.replace("_", " ").capitalize()
    help_text = spec.get("help", "")
    default = spec.get("default")
    kind = spec["type"]
    # Character fields everywhere: the schema validator (one rule for API and page) judges the values.
    if kind == "boolean":
        return forms.BooleanField(label=label, required=False, initial=bool(default), help_text=help_text)
    if kind == "enum":
        return forms.ChoiceField(
            label=label, choices=[(c, c) for c in spec["choices"]], initial=default, help_text=help_text
        )
    attrs = {}
    if kind in ("integer", "number"):
        attrs = {"inputmode": "decimal"}
        bounds = [f"{word} {spec[key]}" for key, word in (("minimum", "min"), ("maximum", "max")) if key in spec]
        help_text = "; ".join(part for part in (help_text.rstrip(". "), ", ".join(bounds)) if part)
    if kind == "array":
        default = ", ".join(default or [])
        help_text = "; ".join(part for part in (help_text.rstrip(". "), "comma-separated") if part)
    return forms.CharField(
        label=label, required=False, initial=default, help_text=help_text, widget=forms.TextInput(attrs=attrs)
    )
