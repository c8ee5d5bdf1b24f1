from django import forms


class EvaluationForm(forms.Form):
    """The page's create form; the service does the real validation (same rules as the API)."""

    model = forms.TypedChoiceField(coerce=int, label="Fine-tuned model")
    test_set_path = forms.ChoiceField(label="Test set")
    base_model_name = forms.CharField(max_length=200, label="Base model (in Ollama)")
    fine_tuned_name = forms.CharField(
        max_length=200, required=False, label="Fine-tuned model name in Ollama", help_text="Defaults to the model's."
    )
    labels = forms.CharField(
        max_length=5000,
        required=False,
        help_text="Comma-separated. Leave empty to use the labels found in the test set.",
    )
    max_examples = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    concurrency = forms.IntegerField(min_value=1, max_value=32, required=False, initial=4)
    name = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, models=(), datasets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(model.id, model.name) for model in models]
        self.fields["test_set_path"].choices = [
            (dataset.path, f"{dataset.name} ({dataset.records} records)") for dataset in datasets
        ]

    def clean_labels(self) -> list[str] | None:
        raw = self.cleaned_data.get("labels") or ""
        labels = [label.strip() for label in raw.split(",") if label.strip()]
        return labels or None
