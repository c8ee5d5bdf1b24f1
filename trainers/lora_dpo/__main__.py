"""``python -m trainers.lora_dpo``: the command the job runner starts (see train.py for the contract)."""

from .train import main

raise SystemExit(main())
