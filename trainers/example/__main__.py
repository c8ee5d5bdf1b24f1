"""Example trainer (``python -m trainers.example``): follows docs/trainers.md.

Reads DATASET_PATH (JSON array, JSON lines or CSV records) and HYPERPARAMS_FILE, trains a
linear classifier on hashed word/bigram features with SGD (one partial_fit pass per
epoch, in mini-batches), prints plain log lines and one JSON metrics line per epoch,
and writes OUTPUT_DIR/classifier/{model.joblib,labels.json,config.json} and
OUTPUT_DIR/metrics.json. Exit code 0 on success, 2 on bad input.
"""

import json
import math
import os
import random
import sys
import time
from pathlib import Path

from finetune_studio.records import RecordError, open_records

# The classifier's weights are labels × features float64s: past this the run would exhaust the worker's memory.
MAX_WEIGHT_BYTES = 2 << 30
LISTED_LABELS = 20


def log(level: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [{level}] {message}", flush=True)


def main() -> int:
    try:
        dataset_path = os.environ["DATASET_PATH"]
        output_dir = Path(os.environ["OUTPUT_DIR"])
        params = json.loads(Path(os.environ["HYPERPARAMS_FILE"]).read_text())
    except (KeyError, OSError, ValueError) as exc:
        print(f"missing or unreadable contract input: {exc}", file=sys.stderr, flush=True)
        return 2
    if not dataset_path:
        print("this trainer needs a dataset (DATASET_PATH is empty)", file=sys.stderr, flush=True)
        return 2
    try:
        records = open_records(dataset_path)
    except RecordError as exc:
        print(f"dataset: {exc}", file=sys.stderr, flush=True)
        return 2

    # A model this small trains fastest on one thread; BLAS/OpenMP thread pools only fight over shared cores.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

    import joblib
    import numpy as np
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, hinge_loss, log_loss

    epochs = int(params.get("epochs", 10))
    batch_size = int(params.get("batch_size", 16))
    learning_rate = float(params.get("learning_rate", 0.5))
    loss_name = params.get("loss", "log_loss")
    seed = int(params.get("seed", 42))
    validation_fraction = float(params.get("validation_fraction", 0.2))

    labels = sorted({record.label for record in records})
    if len(labels) < 2:
        print(f"need at least two labels to train a classifier, found {labels}", file=sys.stderr, flush=True)
        return 2
    n_features = int(params.get("n_features", 2**18))
    if len(labels) * n_features * 8 > MAX_WEIGHT_BYTES:
        # Free-text answers (a chat or instruction set) are each a "label" to a classifier.
        print(
            f"{len(labels)} distinct labels in {len(records)} records: a classifier over {n_features} features would "
            f"hold {len(labels) * n_features * 8 / 2**30:.1f} GiB of weights. The example trainer classifies short "
            "labels (text/label data); these look like free-text answers: use the lora-sft trainer to learn them",
            file=sys.stderr,
            flush=True,
        )
        return 2
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    held_out = int(len(shuffled) * validation_fraction) if len(shuffled) >= 10 else 0
    validation, training = shuffled[:held_out], shuffled[held_out:]
    listed = ", ".join(labels[:LISTED_LABELS]) + (", …" if len(labels) > LISTED_LABELS else "")
    log("INFO", f"{len(records)} records, {len(labels)} labels: {listed}")
    log(
        "INFO",
        f"training on {len(training)}, validating on {len(validation)}; "
        f"base model {os.environ.get('BASE_MODEL', '-')} is not used (this is not an LLM fine-tune)",
    )

    vectorizer = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    x_train = vectorizer.transform([record.text for record in training])
    y_train = np.array([record.label for record in training])
    x_valid = vectorizer.transform([record.text for record in validation]) if validation else None
    y_valid = np.array([record.label for record in validation])
    model = SGDClassifier(
        loss=loss_name,
        alpha=float(params.get("alpha", 1e-5)),
        learning_rate="invscaling",
        eta0=learning_rate,
        power_t=0.25,
        random_state=seed,
    )
    steps_per_epoch = math.ceil(len(training) / batch_size)
    total_steps = epochs * steps_per_epoch
    rng = np.random.default_rng(seed)
    history = []
    step = 0
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(training))
        for start in range(0, len(training), batch_size):
            batch = order[start : start + batch_size]
            model.partial_fit(x_train[batch], y_train[batch], classes=labels)
            step += 1
        train_loss = _loss(model, x_train, y_train, labels, loss_name, log_loss, hinge_loss)
        point = {
            "step": step,
            "epoch": epoch,
            "total_steps": total_steps,
            "loss": round(train_loss, 6),
            "accuracy": round(float(accuracy_score(y_train, model.predict(x_train))), 4),
            "learning_rate": round(learning_rate / (model.t_**0.25), 8),
        }
        if x_valid is not None:
            point["eval_accuracy"] = round(float(accuracy_score(y_valid, model.predict(x_valid))), 4)
        history.append(point)
        print(json.dumps(point), flush=True)
        if not math.isfinite(train_loss):
            log("ERROR", f"loss diverged at epoch {epoch}; lower the learning rate")
            return 1
    elapsed = time.monotonic() - started
    log("INFO", f"trained {epochs} epochs ({total_steps} steps) in {elapsed:.2f} s")

    classifier_dir = output_dir / "classifier"
    classifier_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, classifier_dir / "model.joblib")
    (classifier_dir / "labels.json").write_text(json.dumps(labels))
    (classifier_dir / "config.json").write_text(
        json.dumps({"vectorizer": "HashingVectorizer", "ngram_range": [1, 2], **params}, indent=2)
    )
    final = history[-1]
    metrics = {
        "trainer": "example",
        "kind": "scikit-learn text classifier (not an LLM fine-tune)",
        "final_loss": final["loss"],
        "train_accuracy": final["accuracy"],
        "eval_accuracy": final.get("eval_accuracy"),
        "epochs": epochs,
        "total_steps": total_steps,
        "train_records": len(training),
        "validation_records": len(validation),
        "labels": labels,
        "training_seconds": round(elapsed, 3),
        "loss_history": [{"step": p["step"], "loss": p["loss"]} for p in history],
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log("INFO", f"wrote {classifier_dir.relative_to(output_dir)}/ and metrics.json")
    return 0


def _loss(model, x, y, labels, loss_name, log_loss, hinge_loss) -> float:
    if loss_name in ("log_loss", "modified_huber"):
        return float(log_loss(y, model.predict_proba(x), labels=labels))
    return float(hinge_loss(y, model.decision_function(x), labels=labels))


if __name__ == "__main__":
    sys.exit(main())
