from django import forms


class EvaluationForm(forms.Form):
    """The page's create form; the service does the real validation (same rules as the API).

    Endpoints are offered from the operator's list (``inference.selectors``): a user picks a name, never a URL.
    """

    model = forms.TypedChoiceField(coerce=int, label="Fine-tuned model")
    test_set_path = forms.ChoiceField(label="Test set")
    base_endpoint = forms.ChoiceField(required=False, label="Base model's endpoint")
    base_model_name = forms.CharField(
        max_length=200, required=False, label="Base model", help_text="Defaults to the model's base."
    )
    fine_tuned_endpoint = forms.ChoiceField(required=False, label="Fine-tuned model's endpoint")
    fine_tuned_name = forms.CharField(
        max_length=200,
        required=False,
        label="Fine-tuned model name",
        help_text="Defaults to the model's (on local: the model's own LoRA adapter on its base).",
    )
    labels = forms.CharField(
        max_length=5000,
        required=False,
        help_text="Comma-separated. Leave empty to use the labels found in the test set.",
    )
    task = forms.ChoiceField(
        required=False,
        choices=[("", "The test set's"), ("classification", "Classification"), ("generation", "Generation")],
        help_text="Generation: answers scored against the reference (exact match, token F1, ROUGE-L, chrF).",
    )
    judge_endpoint = forms.ChoiceField(required=False, label="Judge's endpoint")
    judge_model = forms.CharField(
        max_length=200, required=False, label="Judge model", help_text="Generation only; leave empty for no judge."
    )
    judge_prompt = forms.CharField(
        max_length=20000, required=False, widget=forms.Textarea(attrs={"rows": 8}), strip=False, label="Judge prompt"
    )
    max_examples = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    concurrency = forms.IntegerField(min_value=1, max_value=32, required=False, initial=4)
    name = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, models=(), datasets=(), endpoints=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(model.id, model.name) for model in models]
        self.fields["test_set_path"].choices = [
            (dataset.path, f"{dataset.name} ({dataset.records} records)") for dataset in datasets
        ]
        names = [(endpoint.name, endpoint.name) for endpoint in endpoints]
        self.fields["base_endpoint"].choices = names
        self.fields["fine_tuned_endpoint"].choices = names
        self.fields["judge_endpoint"].choices = names
        from .judge import DEFAULT_JUDGE_PROMPT

        self.fields["judge_prompt"].initial = DEFAULT_JUDGE_PROMPT

    def judge(self) -> dict | None:
        """The service's ``judge`` from the three judge fields (None without a judge model)."""
        data = self.cleaned_data
        if not data.get("judge_model"):
            return None
        return {
            "endpoint": data.get("judge_endpoint") or None,
            "model": data["judge_model"],
            "prompt": data.get("judge_prompt") or None,
        }

    def clean_labels(self) -> list[str] | None:
        raw = self.cleaned_data.get("labels") or ""
        labels = [label.strip() for label in raw.split(",") if label.strip()]
        return labels or None
