import pytest
from hypothesis import given
from hypothesis import strategies as st

from finetune_studio.keys import InvalidName, clean_name, clean_relative_path, download_filename, user_key, user_prefix

HOSTILE = [
    "../etc/passwd",
    "..\\windows",
    "%2e%2e%2f",
    "%252e%252e%252f",
    "a;b",
    "a#b",
    "a?b",
    "/absolute",
    "nul\x00byte",
    "x" * 300,
    "..",
    ".",
    "",
    "bad\udcffutf8",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_relative_paths_are_refused_with_a_reason(name):
    with pytest.raises(InvalidName) as info:
        clean_relative_path(name)
    assert str(info.value)


def test_ordinary_model_paths_are_accepted():
    assert clean_relative_path("lora_adapters/adapter_model.safetensors") == "lora_adapters/adapter_model.safetensors"
    assert clean_name("Contract clauses v2.jsonl") == "Contract clauses v2.jsonl"


@given(st.text(min_size=1, max_size=60), st.integers(min_value=1, max_value=10**9))
def test_every_key_built_stays_under_its_owner_prefix(name, user_id):
    try:
        key = user_key(user_id, "datasets", name)
    except InvalidName:
        return
    assert key.startswith(user_prefix(user_id))
    assert "/../" not in f"/{key}/" and "\x00" not in key


def test_download_filename_is_ascii_and_header_safe():
    assert download_filename('Mödel "v1"\r\n', extension=".zip") == "Model-v1.zip"
    assert download_filename("..", extension=".zip") == "download.zip"
