"""The example trainer: a scikit-learn text classifier that demonstrates the trainer contract."""

DEFINITION = {
    "name": "example",
    "description": (
        "Example trainer: a scikit-learn linear text classifier (hashed word and bigram features, SGD with "
        "partial_fit per epoch) trained on the dataset's text/label records. It demonstrates the trainer "
        "contract (logs, JSON metrics lines, artifacts, exit code) in seconds on a CPU. It does not fine-tune "
        "an LLM: base_model is only recorded; use lora-sft for a real LoRA fine-tune."
    ),
    "command": ["{python}", "-m", "trainers.example"],
    "hyperparameter_schema": {
        "epochs": {"type": "integer", "default": 10, "minimum": 1, "maximum": 500, "help": "Passes over the data."},
        "learning_rate": {
            "type": "number",
            "default": 0.5,
            "minimum": 0.000001,
            "maximum": 10,
            "help": "Initial SGD step size (inverse scaling schedule).",
        },
        "batch_size": {"type": "integer", "default": 16, "minimum": 1, "maximum": 4096},
        "loss": {
            "type": "enum",
            "choices": ["log_loss", "modified_huber", "hinge"],
            "default": "log_loss",
            "help": "SGD loss; log_loss gives calibrated probabilities.",
        },
        "alpha": {"type": "number", "default": 0.00001, "minimum": 0, "maximum": 1, "help": "L2 regularisation."},
        "n_features": {"type": "integer", "default": 262144, "minimum": 1024, "maximum": 4194304},
        "validation_fraction": {
            "type": "number",
            "default": 0.2,
            "minimum": 0,
            "maximum": 0.5,
            "help": "Share of records held out to report validation accuracy.",
        },
        "seed": {"type": "integer", "default": 42, "minimum": 0, "maximum": 2147483647},
    },
    "required_modules": ["sklearn", "joblib"],
    "loads_base_model": False,
    "presets": {},
    "queue": "training",
    "timeout_seconds": 3600,
}
