from django import forms
from django.conf import settings

from . import chat

CHAT_DEFAULT_MAX_TOKENS = 256


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


class ChatForm(forms.Form):
    """The model page's Chat: one more message after the conversation so far (``history``, carried by the page).

    A field a script leaves out takes its default; ``errors_by_field`` gives one reason per field, as the page and
    its stream show them. ``turns`` is the conversation read back, ``question`` chat_page_reply's keywords."""

    DEFAULTS = {"system": "", "message": "", "temperature": "0", "max_tokens": str(CHAT_DEFAULT_MAX_TOKENS)}

    message = forms.CharField(required=False)
    system = forms.CharField(required=False)
    temperature = forms.FloatField()  # bounds and wording set per instance (CHAT_MAX_TOKENS is a setting)
    max_tokens = forms.IntegerField()
    history = forms.CharField(required=False, strip=False)

    def __init__(self, data=None):
        if data is not None:
            data = {**self.DEFAULTS, **{key: data.get(key) for key in data}}
        super().__init__(data)
        for name, kind, low, high in (
            ("temperature", forms.FloatField, 0, 2),
            ("max_tokens", forms.IntegerField, 1, settings.CHAT_MAX_TOKENS),
        ):
            reason = f"a {'whole ' if kind is forms.IntegerField else ''}number from {low} to {high}"
            messages = {key: reason for key in ("required", "invalid", "min_value", "max_value")}
            self.fields[name] = kind(min_value=low, max_value=high, error_messages=messages)
        self._turns: list[dict] = []

    def clean_message(self):
        message = self.cleaned_data["message"]
        if not message:
            raise forms.ValidationError("write a message to send")
        return message

    def clean_history(self):
        try:
            self._turns = chat.chat_page_turns(self.cleaned_data["history"])
        except chat.ChatInvalid as exc:
            raise forms.ValidationError(exc.errors["history"]) from None
        return self.cleaned_data["history"]

    @property
    def turns(self) -> list[dict]:
        """The conversation so far, read back from ``history`` (empty when it could not be)."""
        self.errors  # noqa: B018 - validates the form once, which reads the history
        return self._turns

    @property
    def chosen(self) -> dict:
        """The fields as typed, to show again."""
        source = self.data if self.is_bound else self.DEFAULTS
        return {key: str(source.get(key) or "").strip() for key in self.DEFAULTS}

    @property
    def errors_by_field(self) -> dict[str, str]:
        """One reason per field."""
        return {field: reasons[0] for field, reasons in self.errors.items()}

    @property
    def question(self) -> dict:
        return {key: self.cleaned_data[key] for key in ("system", "message", "temperature", "max_tokens")}
