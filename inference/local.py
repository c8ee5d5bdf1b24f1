"""The studio's own inference engine: a base model folder, optionally a LoRA adapter folder, transformers + PEFT.

Runs where the evaluation runs (the evaluations worker, a script), and in a standalone studio's own process
for chat requests (``LOCAL_INFERENCE_SERVES_CHAT``), never in a production web process: torch,
transformers and PEFT are imported only when a model is first loaded, so importing this module, building
a ``LocalBackend`` or listing endpoints costs nothing.

Generation is greedy (sampled when a request asks for a temperature) and batched: prompts are rendered with the
tokenizer's chat template exactly as the lora-sft trainer renders them (``apply_chat_template(...,
add_generation_prompt=True)`` then tokenized without extra special tokens), sorted by length, left-padded into
batches and decoded with the KV cache.
Loaded models are kept per process in an LRU cache bounded in bytes of weights.

Tool calling: a request's ``tools`` are given to the chat template (``apply_chat_template(..., tools=…)``)
with its turns in the template's shape (``tool_calls.template_turns``: arguments as objects); whether and how
the tools appear in the prompt is the template's, as in training. When the request had tools, the answer's
calls become ``Answer.tool_calls`` and leave the content (``tool_calls.parse_tool_calls``): the
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks of the Hermes convention (the demo base's and
Qwen2.5's templates), or a whole answer ``{"name": …, "parameters": {…}}`` naming an offered function (Llama
3.1's and 3.2's). A template that writes calls differently gives answers scored as text. The blocks must decode as
text: a tokenizer that registers ``<tool_call>`` as a *special* token would have it removed by
``skip_special_tokens``.

Folders come from trusted code (the registry's adapter, the operator's base-model catalogue), never from
a user's request: this module does not check where they are.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import Answer, Backend, ChatRequest, Delta, InferenceError, ModelNotFound, Outcome, Refused
from .tool_calls import parse_tool_calls, template_turns

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class LocalModelRef:
    """A base model folder and, optionally, a PEFT adapter folder trained on it.

    ``tokenizer``: a folder whose tokenizer (and chat template) to use instead; an evaluation asks the base
    without the adapter but with the adapter's tokenizer, so both candidates see the prompt as trained.
    Otherwise the adapter's tokenizer when it saved one, else the base's.
    """

    base: str
    adapter: str | None = None
    tokenizer: str | None = None

    def describe(self) -> str:
        return f"{self.base} + adapter {self.adapter}" if self.adapter else self.base


@dataclass
class LoadedModel:
    ref: LocalModelRef
    model: object  # a transformers PreTrainedModel (or a PeftModel wrapping one), in eval mode
    tokenizer: object
    device: str
    nbytes: int


@dataclass(frozen=True)
class Sampling:
    """Sampled rather than greedy decoding: from the ``top_p`` nucleus at ``temperature``; the same ``seed`` gives
    the same answer to the same prompt generated alone (a batch of one)."""

    temperature: float
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Generated:
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence or a stop string) | "length"


class ModelTooLarge(Refused):
    pass


class ModelCache:
    """Loaded models of this process, least recently used evicted first so the total stays under ``max_bytes``.

    A model larger than the whole bound is refused rather than loaded past it: the bound is the operator's
    promise about this worker's memory.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        return sum(loaded.nbytes for loaded in self._models.values())

    def loaded_keys(self) -> list[tuple]:
        """(base, adapter, device) of every loaded model, least recently used first."""
        with self._lock:
            return list(self._models)

    def get(self, key: tuple, load) -> LoadedModel:
        # One lock for loading too: two threads asking for the same model must not load it twice.
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load()
            if loaded.nbytes > self.max_bytes:
                raise ModelTooLarge(
                    f"{loaded.ref.describe()} needs {loaded.nbytes:,} bytes of weights, more than the local "
                    f"engine's bound of {self.max_bytes:,} (LOCAL_INFERENCE_MAX_BYTES)",
                    endpoint="local",
                )
            while self._models and self.total_bytes + loaded.nbytes > self.max_bytes:
                self._models.popitem(last=False)
            self._models[key] = loaded
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LocalEngine:
    """Loads models (cached) and generates greedily in batches. Thread-safe: one generation at a time."""

    def __init__(self, *, device: str = "auto", max_bytes: int = 4 * 2**30, batch_size: int = 16, dtype: str = "auto"):
        self.device_setting = device
        self.dtype_setting = dtype
        self.batch_size = batch_size
        self.cache = ModelCache(max_bytes)
        # torch already spreads one generation over every core: two at once only fight for them.
        self._generating = threading.Lock()

    def load(self, ref: LocalModelRef) -> LoadedModel:
        device = resolve_device(self.device_setting)
        key = (
            str(Path(ref.base).resolve()),
            str(Path(ref.adapter).resolve()) if ref.adapter else None,
            device,
            str(Path(ref.tokenizer).resolve()) if ref.tokenizer else None,
        )
        return self.cache.get(key, lambda: _load(ref, device=device, dtype=self.dtype_setting))

    def render(self, loaded: LoadedModel, messages: Sequence[dict], *, tools: Sequence[dict] = ()) -> list[int]:
        """Token ids of the prompt, rendered as the lora-sft trainer renders its training records.

        ``messages`` are OpenAI-shaped turns (``ChatRequest.messages``), ``tools`` OpenAI function definitions.
        """
        tokenizer = loaded.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                template_turns(messages), tools=list(tools) or None, tokenize=False, add_generation_prompt=True
            )
        else:
            text = "\n\n".join(str(message.get("content", "")) for message in messages)
        # The chat template already writes any BOS it wants: never let the tokenizer add another.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        ref: LocalModelRef,
        prompts: Sequence[Sequence[dict]],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
        sampling: Sampling | None = None,
    ) -> list[Generated]:
        """Answers to every prompt (a list of chat messages each), in the order given: greedy unless ``sampling``."""
        loaded = self.load(ref)
        encoded = [self.render(loaded, messages) for messages in prompts]
        return self.generate_ids(loaded, encoded, max_new_tokens=max_new_tokens, stop=stop, sampling=sampling)

    def generate_ids(
        self,
        loaded: LoadedModel,
        encoded: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
        sampling: Sampling | None = None,
    ) -> list[Generated]:
        results: list[Generated | None] = [None] * len(encoded)
        # Similar lengths batched together: less padding to compute over. Sampled prompts go one at a time, so a
        # seed gives the same answer whatever else was asked alongside.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        size = 1 if sampling is not None else self.batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            outputs = self._generate_batch(loaded, [encoded[i] for i in chunk], max_new_tokens, stop, sampling)
            for index, output in zip(chunk, outputs, strict=True):
                results[index] = output
        return [result for result in results if result is not None]

    def _generate_batch(
        self, loaded: LoadedModel, batch, max_new_tokens: int, stop, sampling: Sampling | None
    ) -> list[Generated]:
        output = self._generate(loaded, batch, max_new_tokens, sampling)
        return self._decoded(loaded, output, batch, stop)

    def _generate(self, loaded: LoadedModel, batch, max_new_tokens: int, sampling: Sampling | None, **stream):
        """``model.generate`` over the left-padded batch, under the engine's lock: the output ids, prompts included.
        ``stream``: ``streamer`` and ``criteria`` (stopping criteria) for ``generate_stream``."""
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        tokenizer, model = loaded.tokenizer, loaded.model
        pad_id = _pad_token_id(tokenizer)
        eos_ids = _eos_token_ids(tokenizer, model)
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            if ids:
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
        decoding = {"do_sample": False}
        if sampling is not None:
            decoding = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        config = GenerationConfig(
            **decoding,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_ids or None,
            use_cache=True,
        )
        with self._generating, torch.inference_mode():
            if sampling is not None and sampling.seed is not None:
                # Under the lock: the generator is the process's, and nothing else draws from it meanwhile.
                torch.manual_seed(sampling.seed)
            return model.generate(
                input_ids=input_ids.to(loaded.device),
                attention_mask=attention_mask.to(loaded.device),
                generation_config=config,
                streamer=stream.get("streamer"),
                stopping_criteria=StoppingCriteriaList(stream.get("criteria", [])),
            )

    def _decoded(self, loaded: LoadedModel, output, batch, stop) -> list[Generated]:
        """Each row's new tokens up to its end of sequence, decoded and cut at the first stop string."""
        tokenizer = loaded.tokenizer
        eos_ids = _eos_token_ids(tokenizer, loaded.model)
        width = max(len(ids) for ids in batch)
        results = []
        for ids, prompt in zip(output[:, width:].tolist(), batch, strict=True):
            finish = "length"
            for position, token in enumerate(ids):
                if token in eos_ids:
                    ids, finish = ids[:position], "stop"
                    break
            text = tokenizer.decode(ids, skip_special_tokens=True)
            for marker in stop:
                if marker and marker in text:
                    text, finish = text[: text.index(marker)], "stop"
            results.append(Generated(text=text, token_ids=tuple(ids), prompt_tokens=len(prompt), finish_reason=finish))
        return results

    def generate_stream(
        self,
        loaded: LoadedModel,
        ids: Sequence[int],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
        sampling: Sampling | None = None,
    ) -> Iterator[str | Generated]:
        """One prompt's answer as it is generated: text pieces, then the whole ``Generated`` (the same answer
        ``generate_ids`` gives). Text that may begin a stop string is held back until it cannot; closing the
        iterator early stops the generation at the next token."""
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer

        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()

        class WhenCancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        result: dict = {}

        def run() -> None:
            try:
                result["output"] = self._generate(
                    loaded, [list(ids)], max_new_tokens, sampling, streamer=streamer, criteria=[WhenCancelled()]
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name="local-engine-stream", daemon=True)
        worker.start()
        hold = max((len(marker) for marker in stop if marker), default=1) - 1
        text, sent, stopped = "", 0, False
        try:
            for piece in streamer:
                text += piece
                found = [text.index(marker) for marker in stop if marker and marker in text]
                if found:
                    text, stopped = text[: min(found)], True
                    cancelled.set()
                    break
                if len(text) - hold > sent:
                    yield text[sent : len(text) - hold]
                    sent = len(text) - hold
        finally:
            # Stopped by a stop string, or the reader went away: the generation ends at its next token. (After a
            # whole answer it has ended already.)
            cancelled.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        if len(text) > sent:
            yield text[sent:]
        (generated,) = self._decoded(loaded, result["output"], [list(ids)], stop)
        yield Generated(
            text=text,
            token_ids=generated.token_ids,
            prompt_tokens=len(ids),
            finish_reason="stop" if stopped else generated.finish_reason,
        )


def _pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _eos_token_ids(tokenizer, model) -> list[int]:
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return sorted(ids)


def _load(ref: LocalModelRef, *, device: str, dtype: str) -> LoadedModel:
    # Before transformers/huggingface_hub are imported: a name that is not a local folder must fail at once,
    # not stall on a network this studio must never use for weights.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not (Path(ref.base) / "config.json").is_file():
        raise ModelNotFound(f"the local base model folder {ref.base} has no config.json", endpoint="local")
    if ref.adapter and not (Path(ref.adapter) / "adapter_config.json").is_file():
        raise ModelNotFound(f"the local adapter folder {ref.adapter} has no adapter_config.json", endpoint="local")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tokenizer_folder = ref.tokenizer or (
        ref.adapter if ref.adapter and (Path(ref.adapter) / "tokenizer_config.json").exists() else None
    )
    try:
        # The adapter's tokenizer when it saved one: the trainer may have given it the chat template it trained with.
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder or ref.base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(ref.base, local_files_only=True, dtype=torch_dtype)
        if ref.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, ref.adapter, is_trainable=False)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot load {ref.describe()} in the local engine: {_first_line(exc)}", endpoint="local")
    tokenizer.padding_side = "left"
    model.to(device)
    model.eval()
    nbytes = sum(t.numel() * t.element_size() for t in model.parameters())
    nbytes += sum(t.numel() * t.element_size() for t in model.buffers())
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, device=device, nbytes=nbytes)


def _sampling(options) -> Sampling | None:
    """Sampled decoding for a request with a temperature above 0; None: greedy."""
    if options.temperature <= 0:
        return None
    return Sampling(temperature=options.temperature, top_p=options.top_p, seed=options.seed)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class LocalBackend(Backend):
    """The local engine behind the backend interface. Model names are registered by trusted code.

    ``register("fine_tuned", LocalModelRef(base, adapter))`` and then ``chat(ChatRequest("fine_tuned", ...))``:
    a caller never hands a folder through a request. ``chat_many`` batches; ``chat`` is a batch of one.
    Greedy unless a request's temperature is above 0 (then sampled, one prompt at a time). Nothing is retried:
    a failure is the reason, as Refused or ModelNotFound.
    """

    kind = "local"
    supports_schema = False  # free text: callers use their fallback parser

    def __init__(self, *, endpoint: str = "local", engine: LocalEngine, timeout: float = 3600.0):
        super().__init__(endpoint=endpoint, concurrency=1, timeout=timeout)
        self.engine = engine
        self._models: dict[str, LocalModelRef] = {}

    def register(self, name: str, ref: LocalModelRef) -> None:
        self._models[name] = ref

    def list_models(self) -> list[str]:
        return sorted(self._models)

    def chat(self, request: ChatRequest) -> Answer:
        (outcome,) = list(self.chat_many([request]))
        if outcome.error is not None:
            raise outcome.error
        return outcome.answer  # type: ignore[return-value]

    def chat_many(self, requests: Sequence[ChatRequest]) -> Iterator[Outcome]:
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            options = request.options
            key = (request.model, options.max_tokens, options.stop, _sampling(options))
            groups.setdefault(key, []).append(index)
        for (model, max_tokens, stop, sampling), indexes in groups.items():
            yield from self._answer_group(requests, model, max_tokens, stop, sampling, indexes)

    def _answer_group(self, requests, model, max_tokens, stop, sampling, indexes) -> Iterator[Outcome]:
        try:
            ref = self._ref(model)
            loaded = self.engine.load(ref)
        except InferenceError as exc:
            for index in indexes:
                yield Outcome(index=index, error=exc)
            return
        size = self.engine.batch_size
        for start in range(0, len(indexes), size):
            if self._stop.is_set():
                return
            chunk = indexes[start : start + size]
            began = time.perf_counter()
            try:
                encoded = [self.engine.render(loaded, requests[i].messages, tools=requests[i].tools) for i in chunk]
                outputs = self.engine.generate_ids(
                    loaded, encoded, max_new_tokens=max_tokens or DEFAULT_MAX_NEW_TOKENS, stop=stop, sampling=sampling
                )
            except Exception as exc:  # noqa: BLE001 - any failure of generation is the reason, named, not a crash
                error = self._failure(ref, exc)
                for index in chunk:
                    yield Outcome(index=index, error=error)
                continue
            latency_ms = (time.perf_counter() - began) * 1000
            for index, output in zip(chunk, outputs, strict=True):
                # Only a request that offered tools can be answered by calls: elsewhere the text is the answer.
                content, calls = output.text, ()
                if requests[index].tools:
                    offered = [(tool.get("function") or {}).get("name") for tool in requests[index].tools]
                    content, calls = parse_tool_calls(output.text, tool_names=offered)
                yield Outcome(
                    index=index,
                    answer=Answer(
                        content=content,
                        latency_ms=latency_ms,
                        prompt_tokens=output.prompt_tokens,
                        completion_tokens=len(output.token_ids),
                        finish_reason=output.finish_reason,
                        tool_calls=calls,
                    ),
                )

    def chat_stream(self, request: ChatRequest) -> Iterator[Delta | Answer]:
        """The answer as the engine generates it; with tools, whole (the calls are read from the whole answer)."""
        if request.tools:
            yield from super().chat_stream(request)
            return
        ref = self._ref(request.model)
        loaded = self.engine.load(ref)
        options = request.options
        started = time.perf_counter()
        try:
            pieces = self.engine.generate_stream(
                loaded,
                self.engine.render(loaded, request.messages),
                max_new_tokens=options.max_tokens or DEFAULT_MAX_NEW_TOKENS,
                stop=options.stop,
                sampling=_sampling(options),
            )
            for piece in pieces:
                if isinstance(piece, str):
                    yield Delta(piece)
                    continue
                yield Answer(
                    content=piece.text,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    prompt_tokens=piece.prompt_tokens,
                    completion_tokens=len(piece.token_ids),
                    finish_reason=piece.finish_reason,
                )
        except InferenceError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of generation is the reason, named, not a crash
            raise self._failure(ref, exc) from None

    def _failure(self, ref: LocalModelRef, exc: Exception) -> Refused:
        return Refused(
            f"endpoint '{self.endpoint}' failed generating with {ref.describe()}: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            endpoint=self.endpoint,
        )

    def _ref(self, model: str) -> LocalModelRef:
        try:
            return self._models[model]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(
                f"model '{model}' not found on endpoint '{self.endpoint}' (registered: {known})",
                endpoint=self.endpoint,
            ) from None
