"""The local engine on the demo base: batched greedy answers equal ``generate`` one at a time, adapters load
from folders with the trained model's logits, and loaded models stay under the memory bound."""

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

import torch  # noqa: E402

from inference.base import ChatOptions, ChatRequest, ModelNotFound  # noqa: E402
from inference.local import LocalBackend, LocalEngine, LocalModelRef, ModelTooLarge  # noqa: E402
from tests.factories import calling_turn, function_tool, lora_adapter, tool_call, tool_result  # noqa: E402
from trainers.demo_base import CLASSIFY_INSTRUCTION, synthetic_clause_records  # noqa: E402


def clause_prompts(count: int, *, seed: int = 3) -> list[list[dict]]:
    # One to three clauses each: prompts of different lengths, so batches really are left-padded.
    records = [
        *synthetic_clause_records(count // 2, seed=seed),
        *synthetic_clause_records(count - count // 2, seed=seed + 1, clauses_per_record=3),
    ]
    return [
        [{"role": "system", "content": CLASSIFY_INSTRUCTION}, {"role": "user", "content": record["input"]}]
        for record in records
    ]


def one_at_a_time(loaded, engine, prompt, max_new_tokens):
    """What ``model.generate`` answers for one unpadded prompt, up to its end-of-sequence token."""
    ids = engine.render(loaded, prompt)
    output = loaded.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens)
    new = output[0, len(ids) :].tolist()
    eos = loaded.tokenizer.eos_token_id
    return new[: new.index(eos)] if eos in new else new


def test_batched_greedy_answers_equal_generate_one_at_a_time(demo_base):
    engine = LocalEngine(device="cpu", batch_size=16)
    ref = LocalModelRef(str(demo_base))
    prompts = clause_prompts(21)  # a full batch of 16 and a partial one of 5
    batched = engine.generate(ref, prompts, max_new_tokens=24)
    loaded = engine.load(ref)
    expected = [one_at_a_time(loaded, engine, prompt, 24) for prompt in prompts]
    assert [list(answer.token_ids) for answer in batched] == expected
    decoded = [loaded.tokenizer.decode(ids, skip_special_tokens=True) for ids in expected]
    assert [answer.text for answer in batched] == decoded
    assert len({answer.prompt_tokens for answer in batched}) > 5  # the padding was real


def test_an_adapter_loaded_from_its_folder_gives_the_trained_models_logits(demo_base, tmp_path):
    trained = lora_adapter(demo_base, tmp_path / "adapter", seed=11)
    engine = LocalEngine(device="cpu")
    loaded = engine.load(LocalModelRef(str(demo_base), adapter=str(tmp_path / "adapter")))
    base = engine.load(LocalModelRef(str(demo_base)))
    ids = torch.tensor([engine.render(loaded, clause_prompts(2)[0])])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
        base_logits = base.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got - base_logits).abs().max() > 1e-2  # the adapter changes the answer: this is not the base again


def test_loaded_models_are_evicted_least_recently_used_to_stay_under_the_bound(demo_base, tmp_path):
    for name, seed in (("a", 1), ("b", 2)):
        lora_adapter(demo_base, tmp_path / name, seed=seed)
    probe = LocalEngine(device="cpu").load(LocalModelRef(str(demo_base), adapter=str(tmp_path / "a")))
    engine = LocalEngine(device="cpu", max_bytes=int(probe.nbytes * 2.5))
    base = LocalModelRef(str(demo_base))
    with_a = LocalModelRef(str(demo_base), adapter=str(tmp_path / "a"))
    with_b = LocalModelRef(str(demo_base), adapter=str(tmp_path / "b"))
    first = engine.load(base)
    engine.load(with_a)
    assert engine.load(base) is first  # cached, and now the most recently used
    engine.load(with_b)
    adapters = [key[1] for key in engine.cache.loaded_keys()]
    assert adapters == [None, str((tmp_path / "b").resolve())]  # "a", the least recently used, went
    assert engine.cache.total_bytes <= engine.cache.max_bytes


def test_a_model_larger_than_the_bound_is_refused_with_the_reason(demo_base):
    engine = LocalEngine(device="cpu", max_bytes=10_000)
    bound = r"more than the local engine's bound of 10,000 \(LOCAL_INFERENCE_MAX_BYTES\)"
    with pytest.raises(ModelTooLarge, match=bound):
        engine.load(LocalModelRef(str(demo_base)))
    assert engine.cache.loaded_keys() == []


def test_a_folder_that_holds_no_model_is_model_not_found(tmp_path, demo_base):
    engine = LocalEngine(device="cpu")
    with pytest.raises(ModelNotFound, match="has no config.json"):
        engine.load(LocalModelRef(str(tmp_path)))
    with pytest.raises(ModelNotFound, match="has no adapter_config.json"):
        engine.load(LocalModelRef(str(demo_base), adapter=str(tmp_path)))


def test_the_backend_answers_registered_names_in_batches_and_refuses_others(demo_base, tmp_path):
    lora_adapter(demo_base, tmp_path / "adapter", seed=5)
    engine = LocalEngine(device="cpu", batch_size=4)
    backend = LocalBackend(engine=engine)
    backend.register("base", LocalModelRef(str(demo_base)))
    backend.register("fine_tuned", LocalModelRef(str(demo_base), adapter=str(tmp_path / "adapter")))
    assert backend.list_models() == ["base", "fine_tuned"]
    prompts = clause_prompts(6)
    options = ChatOptions(max_tokens=8)
    requests = [ChatRequest("base", tuple(p), options) for p in prompts]
    requests += [ChatRequest("fine_tuned", tuple(p), options) for p in prompts]
    requests.append(ChatRequest("someone-elses-model", tuple(prompts[0]), options))
    outcomes = sorted(backend.chat_many(requests), key=lambda outcome: outcome.index)
    assert len(outcomes) == 13
    expected_base = engine.generate(LocalModelRef(str(demo_base)), prompts, max_new_tokens=8)
    assert [o.answer.content for o in outcomes[:6]] == [g.text for g in expected_base]
    assert [o.answer.content for o in outcomes[6:12]] != [g.text for g in expected_base]
    assert isinstance(outcomes[12].error, ModelNotFound)
    assert "model 'someone-elses-model' not found on endpoint 'local'" in str(outcomes[12].error)


def test_a_temperature_samples_and_the_same_seed_gives_the_same_answer_whatever_is_asked_beside_it(demo_base):
    backend = LocalBackend(engine=LocalEngine(device="cpu", batch_size=8))
    backend.register("base", LocalModelRef(str(demo_base)))
    prompts = clause_prompts(4)

    def ask(prompt, **options):
        return ChatRequest("base", tuple(prompt), ChatOptions(max_tokens=16, **options))

    greedy = backend.chat(ask(prompts[0])).content
    hot = {"temperature": 1.5, "seed": 7}
    alone = backend.chat(ask(prompts[0], **hot)).content
    beside_others = sorted(backend.chat_many([ask(p, **hot) for p in prompts]), key=lambda o: o.index)
    assert beside_others[0].answer.content == alone
    assert backend.chat(ask(prompts[0], **hot)).content == alone
    other_seeds = {backend.chat(ask(prompts[0], temperature=1.5, seed=seed)).content for seed in range(8, 14)}
    # Sampled at a high temperature, the answers vary with the seed, and are not all the greedy one.
    assert len(other_seeds | {alone}) > 2
    assert other_seeds | {alone} != {greedy}


def test_stop_strings_end_the_answer(demo_base):
    engine = LocalEngine(device="cpu")
    ref = LocalModelRef(str(demo_base))
    (full,) = engine.generate(ref, clause_prompts(1), max_new_tokens=24)
    marker = full.text[len(full.text) // 2 :][:2]
    (stopped,) = engine.generate(ref, clause_prompts(1), max_new_tokens=24, stop=[marker])
    assert stopped.text == full.text[: full.text.index(marker)] and stopped.finish_reason == "stop"


def test_a_streamed_answer_is_the_greedy_answer_in_pieces_and_stops_where_it_would(demo_base):
    backend = LocalBackend(engine=LocalEngine(device="cpu"))
    backend.register("base", LocalModelRef(str(demo_base)))
    request = ChatRequest("base", tuple(clause_prompts(1)[0]), ChatOptions(max_tokens=24))
    whole = backend.chat(request)

    *pieces, answer = backend.chat_stream(request)

    assert len(pieces) > 1 and "".join(piece.text for piece in pieces) == answer.content == whole.content
    assert (answer.completion_tokens, answer.finish_reason) == (whole.completion_tokens, whole.finish_reason)
    marker = whole.content[len(whole.content) // 2 :][:3]
    stopped = ChatRequest("base", request.messages, ChatOptions(max_tokens=24, stop=(marker,)))
    *pieces, answer = backend.chat_stream(stopped)
    assert "".join(piece.text for piece in pieces) == answer.content == backend.chat(stopped).content
    assert marker not in answer.content and answer.finish_reason == "stop"


def test_a_stream_left_early_stops_generating_and_frees_the_engine(demo_base):
    backend = LocalBackend(engine=LocalEngine(device="cpu"))
    backend.register("base", LocalModelRef(str(demo_base)))
    prompt = tuple(clause_prompts(1)[0])
    # 20,000 tokens would take the demo base minutes here (2,000 take about 3 s): the stream is left long before.
    stream = backend.chat_stream(ChatRequest("base", prompt, ChatOptions(max_tokens=20_000, stop=("never",))))
    next(stream)
    started = time.monotonic()

    stream.close()
    next_answer = backend.chat(ChatRequest("base", prompt, ChatOptions(max_tokens=4)))

    assert next_answer.completion_tokens > 0
    assert time.monotonic() - started < 5  # the engine was free: the long generation stopped at once


def test_importing_the_backends_imports_no_deep_learning_framework():
    code = (
        "import sys\n"
        "import inference.base, inference.local, inference.openai, inference.ollama_backend\n"
        "from inference.local import LocalBackend, LocalEngine\n"
        "LocalBackend(engine=LocalEngine()).list_models()\n"
        "heavy = sorted(name for name in ('torch', 'transformers', 'peft') if name in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# A chat template that shows the tools and writes calls in the Hermes convention, as Qwen2.5's does (the demo
# base's own template is the trainer's business): the engine must hand it the tools and arguments as objects.
HERMES_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nTools:{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>\n"
    "{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}\n</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = function_tool("get_weather", "city")
TOOL_RECORDS = [
    {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            calling_turn(tool_call("c1", "get_weather", {"city": "Paris"})),
            tool_result("c1", "18C"),
            {"role": "assistant", "content": "It is 18C."},
            {"role": "user", "content": f"And in {city}?"},
            calling_turn(tool_call("c2", "get_weather", {"city": city})),
        ],
    }
    for city in ("Oslo", "Rome")
]


@pytest.fixture
def hermes_tokenizer(demo_base, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base, local_files_only=True)
    tokenizer.chat_template = HERMES_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "hermes")
    return str(tmp_path / "hermes")


def test_the_tools_and_the_calls_so_far_are_rendered_by_the_chat_template(demo_base, hermes_tokenizer):
    from evaluations.generation import conversation_of
    from finetune_studio.records import read_records_from_bytes

    (record, _) = read_records_from_bytes("\n".join(map(json.dumps, TOOL_RECORDS)).encode(), "tools.jsonl")
    messages, reference = conversation_of(record)
    engine = LocalEngine(device="cpu")
    loaded = engine.load(LocalModelRef(str(demo_base), tokenizer=hermes_tokenizer))
    text = loaded.tokenizer.decode(engine.render(loaded, messages, tools=record.tools))
    assert json.dumps(WEATHER) in text  # the tool's definition
    # The earlier call, its arguments an object (not a string of JSON), and its result.
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<|im_start|>tool\n18C<|im_end|>" in text
    assert (
        text.endswith("And in Oslo?<|im_end|>\n<|im_start|>assistant\n")
        and reference == '[{"arguments": {"city": "Oslo"}, "name": "get_weather"}]'
    )


def test_a_tool_test_set_on_the_local_engine_is_scored_honestly_when_the_model_calls_nothing(
    demo_base, hermes_tokenizer
):
    from evaluations import engine as evaluation_engine
    from evaluations import generation
    from finetune_studio.records import read_records_from_bytes

    records = read_records_from_bytes("\n".join(map(json.dumps, TOOL_RECORDS)).encode(), "tools.jsonl")
    backend = LocalBackend(engine=LocalEngine(device="cpu"))
    for name in ("base", "tuned"):
        backend.register(name, LocalModelRef(str(demo_base), tokenizer=hermes_tokenizer))
    store = evaluation_engine.MemoryStore()
    config = evaluation_engine.EvaluationConfig(num_predict=16)
    results, _examples = generation.run_and_score(
        records=records,
        candidates=[evaluation_engine.Candidate(name=name, backend=backend) for name in ("base", "tuned")],
        config=config,
        store=store,
        load_predictions=lambda: store.predictions,
    )
    assert results["examples_evaluated"] == 2
    assert results["base"]["exact_match"] == results["fine_tuned"]["exact_match"] == 0.0
    # The random model wrote no call: its text is the answer, compared with the reference's calls.
    assert all(p.expected.startswith('[{"arguments": ') and p.error == "" for p in store.predictions)
