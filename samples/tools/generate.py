"""Generate the sample tool-calling dataset (OpenAI chat fine-tuning JSONL with tools), deterministically.

    python samples/tools/generate.py      # rewrites train.jsonl and test.jsonl next to this file

Three functions (weather, currency conversion, timers). A user asks something; the assistant either calls the
one function that answers it, with the arguments the question gives, or — for small talk — answers in words.
Training records that call a function go on with the tool's result and the assistant's final answer; test
records stop at the call, so an evaluation asks exactly "which call, with which arguments" (scored by exact
match of the calls). The test set uses other cities, amounts and phrasings' fillers than the training set.
"""

import json
import random
from pathlib import Path

SYSTEM = "Call a tool when the question needs one; otherwise answer briefly."
# Kept short: every record carries its tool definitions, and the demo base's context is 1,024 tokens.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_timer",
            "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}},
        },
    },
]

CITIES = {
    "train": ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Dublin", "Oslo", "Prague", "Athens"],
    "test": ["Tokyo", "Lima", "Cairo", "Seoul", "Quito"],
}
WEATHER = [
    ("What's the weather in {city}?", "celsius"),
    ("How warm is it in {city} right now, in Fahrenheit?", "fahrenheit"),
    ("Weather for {city} please, in Celsius.", "celsius"),
    ("Is it cold in {city}? Give me Fahrenheit.", "fahrenheit"),
]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
AMOUNTS = {"train": [5, 12, 20, 45, 80, 150, 300, 1000], "test": [7, 60, 250]}
CONVERT = [
    "Convert {amount} {src} to {dst}.",
    "How much is {amount} {src} in {dst}?",
    "What do {amount} {src} make in {dst}?",
]
MINUTES = {"train": [1, 3, 5, 10, 15, 20, 30, 45], "test": [2, 25, 40]}
TIMER = ["Set a timer for {minutes} minutes.", "Remind me in {minutes} minutes.", "Start a {minutes} minute timer."]
SMALL_TALK = [
    ("Hello!", "Hello! How can I help?"),
    ("Thanks, that's all.", "You're welcome."),
    ("Who are you?", "An assistant with weather, currency and timer tools."),
    ("Good morning.", "Good morning! How can I help?"),
]


def _question(rng: random.Random, split: str) -> tuple[str, dict | None, str]:
    """(question, the call that answers it or None, the final answer or the small-talk reply)."""
    kind = rng.choice(["weather", "weather", "convert", "convert", "timer", "talk"])
    if kind == "weather":
        template, unit = rng.choice(WEATHER)
        city = rng.choice(CITIES[split])
        degrees = rng.randint(-5, 35) if unit == "celsius" else rng.randint(25, 95)
        reply = f"It is {degrees} degrees {unit} in {city}."
        return template.format(city=city), {"name": "get_weather", "arguments": {"city": city, "unit": unit}}, reply
    if kind == "convert":
        amount = rng.choice(AMOUNTS[split])
        src, dst = rng.sample(CURRENCIES, 2)
        reply = f"{amount} {src} is about {round(amount * rng.uniform(0.5, 1.5), 2)} {dst}."
        question = rng.choice(CONVERT).format(amount=amount, src=src, dst=dst)
        return question, {"name": "convert_currency", "arguments": {"amount": amount, "from": src, "to": dst}}, reply
    if kind == "timer":
        minutes = rng.choice(MINUTES[split])
        question = rng.choice(TIMER).format(minutes=minutes)
        return question, {"name": "set_timer", "arguments": {"minutes": minutes}}, f"Timer set for {minutes} minutes."
    question, reply = rng.choice(SMALL_TALK)
    return question, None, reply


def record(rng: random.Random, split: str, number: int) -> dict:
    question, call, reply = _question(rng, split)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    if call is None:
        messages.append({"role": "assistant", "content": reply})
        return {"tools": TOOLS, "messages": messages}
    call_id = f"call_{split}_{number}"
    messages.append(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
            ],
        }
    )
    if split == "train":
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"ok": True, "summary": reply})}
        )
        messages.append({"role": "assistant", "content": reply})
    return {"tools": TOOLS, "messages": messages}


def generate(split: str, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [record(rng, split, number) for number in range(1, count + 1)]


def main() -> None:
    here = Path(__file__).parent
    for split, count, seed in (("train", 240, 7), ("test", 60, 8)):
        rows = generate(split, count, seed)
        (here / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
