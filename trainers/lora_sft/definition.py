# Filled in by the LoRA trainer work (issue 9): the lora-sft trainer's definition.
DEFINITION = {
    "name": "lora-sft",
    "description": "",
    "command": ["{python}", "-m", "trainers.lora_sft"],
    "hyperparameter_schema": {},
    "required_modules": ["torch", "transformers", "peft"],
    "queue": "training",
    "timeout_seconds": 6 * 3600,
}
