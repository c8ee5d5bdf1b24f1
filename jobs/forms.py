from django import forms

from . import hyperparameters
from .models import Dataset, Trainer
from .selectors import trainers_with_availability

HP_PREFIX = "hp_"


class DatasetUploadForm(forms.Form):
    file = forms.FileField(help_text="JSON array, JSON lines or CSV with text,label (or instruction/input/output).")
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")


class JobForm(forms.Form):
    """The new-job form: fixed fields plus one field per hyperparameter of the chosen trainer."""

    name = forms.CharField(max_length=200)
    base_model = forms.CharField(max_length=200, help_text="e.g. llama3.2:3b, or a local model folder.")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False)
    trainer = forms.ChoiceField()
    registered_name = forms.CharField(
        max_length=100,
        required=False,
        help_text="The registry name its model becomes a version of (default: from the job's name).",
    )

    def __init__(self, *args, user, trainer: Trainer | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = Dataset.objects.filter(owner=user)
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
        for name, spec in self.schema.items():
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
