"""tokenizer.py: the byte tokenizer always; GPT-2 where its ranks file is cached (.ci/seed_tiktoken.sh)."""
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import numpy as np
import pytest

import tokenizer
from errors import UserError
from tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_RANKS = tokenizer.cached_gpt2_ranks()
needs_gpt2 = pytest.mark.skipif(GPT2_RANKS is None, reason="GPT-2 BPE ranks not cached on this machine; "
                                                           "run .ci/seed_tiktoken.sh to test them")
SAMPLE = "Hello world! Café crème, 日本語 😀 and a literal <|endoftext|> in text.\n\ttabs  spaces"


# -----------------------------------------------------------------------------
# byte

def test_byte_tokenizer_encodes_utf8_bytes_and_round_trips():
    tok = load_tokenizer("byte")
    ids = tok.encode(SAMPLE)
    assert ids == list(SAMPLE.encode("utf-8"))
    assert tok.encode_to_numpy(SAMPLE).tolist() == ids
    assert np.frombuffer(tok.encode_to_buffer(SAMPLE), dtype=np.uint32).tolist() == ids
    assert tok.decode(ids) == SAMPLE
    assert tok.decode(np.array(ids, dtype=np.uint16)) == SAMPLE
    assert (tok.n_vocab, tok.eot_token, tok.name) == (257, 256, "byte")
    assert tok.info() == {"name": "byte", "vocab_size": 257, "eot_token": 256, "eot_position": "prepend"}


def test_byte_tokenizer_decodes_eot_and_broken_utf8():
    tok = load_tokenizer({"name": "byte", "vocab_size": 257, "eot_token": 256})
    assert tok.decode([256, 104, 105, 256, 0xC3]) == "<|endoftext|>hi<|endoftext|>\ufffd"
    with pytest.raises(ValueError):
        tok.decode([257])


def test_unknown_or_inconsistent_tokenizer_is_a_user_error():
    with pytest.raises(UserError, match="unknown tokenizer 'bpe'; use one of gpt2, byte"):
        load_tokenizer("bpe")
    with pytest.raises(UserError, match="vocab_size 300, but it has 257"):
        load_tokenizer({"name": "byte", "vocab_size": 300})


# -----------------------------------------------------------------------------
# GPT-2 without its file: a fast one-line error

@pytest.fixture
def no_gpt2_anywhere(tmp_path, monkeypatch):
    """No cached ranks in any folder tokenizer.py looks in, and no network."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(tokenizer, "download_host_reachable", lambda: False)
    monkeypatch.setattr(tokenizer, "_encodings", {})


def test_gpt2_without_file_or_network_fails_fast_in_one_line(no_gpt2_anywhere):
    start = time.time()
    with pytest.raises(UserError) as info:
        load_tokenizer("gpt2")
    message = str(info.value)
    assert time.time() - start < 2
    assert "\n" not in message
    assert message.startswith("GPT-2's BPE file is not cached on this machine")
    for fix in (".ci/seed_tiktoken.sh", "gpt2.tiktoken", "byte tokenizer"):
        assert fix in message
    assert "--" not in message  # a library names no flag of one particular program


def test_missing_or_bad_bpe_file(tmp_path, no_gpt2_anywhere):
    with pytest.raises(UserError, match=r"cannot read the BPE file .*nope\.tiktoken \(No such file"):
        load_tokenizer("gpt2", bpe_file=str(tmp_path / "nope.tiktoken"))
    garbage = tmp_path / "garbage.tiktoken"
    garbage.write_text("this is not base64 at all\n")
    with pytest.raises(UserError, match="is not a tiktoken ranks file"):
        load_tokenizer("gpt2", bpe_file=str(garbage))
    other = tmp_path / "other.tiktoken"
    other.write_text("YQ== 0\nYg== 1\n")  # 'a', 'b'
    with pytest.raises(UserError, match=r"holds other BPE ranks than GPT-2's \(2 tokens"):
        load_tokenizer("gpt2", bpe_file=str(other))


def test_download_probe_gives_up_within_its_timeout(monkeypatch):
    def hang(*args, **kwargs):  # a name lookup that takes long, then fails
        time.sleep(2)
        raise OSError("timed out")
    monkeypatch.setattr(tokenizer.socket, "create_connection", hang)
    start = time.time()
    assert tokenizer.download_host_reachable(timeout=0.2) is False
    assert time.time() - start < 1.5


# -----------------------------------------------------------------------------
# GPT-2 with its file

@needs_gpt2
def test_gpt2_ids_are_gpt2s():
    tok = load_tokenizer("gpt2")
    assert (tok.n_vocab, tok.eot_token, tok.name) == (50257, 50256, "gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    ids = tok.encode(SAMPLE)
    assert 50256 not in ids  # ordinary encoding: the literal text is not the special token
    assert tok.encode_to_numpy(SAMPLE).tolist() == ids
    # prepare.py's path: tiktoken's Rust encoder called directly, and the public fallback
    assert tok._encode_buffer is not None
    assert np.frombuffer(tok.encode_to_buffer(SAMPLE), dtype=np.uint32).tolist() == ids
    tok._encode_buffer = None
    assert np.frombuffer(tok.encode_to_buffer(SAMPLE), dtype=np.uint32).tolist() == ids
    assert tok.decode(ids) == SAMPLE
    assert tok.decode([50256]) == "<|endoftext|>"
    assert tok.info() == {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256, "eot_position": "prepend"}


@needs_gpt2
def test_gpt2_from_bpe_file_and_from_a_seeded_cache_folder(tmp_path, no_gpt2_anywhere):
    copy = tmp_path / "gpt2.tiktoken"
    shutil.copy(GPT2_RANKS, copy)
    assert load_tokenizer("gpt2", bpe_file=str(copy)).encode("Hello world") == [15496, 995]
    # the same ranks saved with Windows line ends: other bytes, same ranks, accepted
    crlf = tmp_path / "crlf.tiktoken"
    crlf.write_bytes(copy.read_bytes().replace(b"\n", b"\r\n"))
    assert load_tokenizer("gpt2", bpe_file=str(crlf)).encode(SAMPLE) == load_tokenizer(
        "gpt2", bpe_file=str(copy)).encode(SAMPLE)
    # the known file's one-pass parse gives exactly the ranks of the checked line-by-line parse
    fast, checked = tokenizer.read_gpt2_ranks(str(copy)), tokenizer.read_gpt2_ranks(str(crlf))
    assert len(fast) == 50256 and fast == checked
    # a file under tiktoken's cache name in TIKTOKEN_CACHE_DIR is found without --bpe-file
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(GPT2_RANKS, cache / hashlib.sha1(tokenizer.GPT2_RANKS_URL.encode()).hexdigest())
    assert tokenizer.cached_gpt2_ranks() == str(cache / "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4")
    assert load_tokenizer("gpt2").encode("Hello world") == [15496, 995]


# -----------------------------------------------------------------------------
# .ci/seed_tiktoken.sh, offline: given a local sdist

def run_seed(cache_dir, sdist):
    env = dict(os.environ, WHISPER_SDIST=str(sdist))
    out = subprocess.run(["bash", os.path.join(ROOT, ".ci", "seed_tiktoken.sh"), str(cache_dir)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def fake_sdist(tmp_path, ranks_bytes):
    asset = tmp_path / "src" / "openai_whisper-20250625" / "whisper" / "assets" / "gpt2.tiktoken"
    asset.parent.mkdir(parents=True)
    asset.write_bytes(ranks_bytes)
    sdist = tmp_path / "openai_whisper-20250625.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "src" / "openai_whisper-20250625", arcname="openai_whisper-20250625")
    return sdist


def test_seed_script_refuses_a_wrong_file_and_exits_0(tmp_path):
    assert "no whisper sdist found" in run_seed(tmp_path / "c1", tmp_path / "missing.tar.gz")
    message = run_seed(tmp_path / "c2", fake_sdist(tmp_path, b"YQ== 0\n"))
    assert "unexpected sha256" in message and "not seeded" in message
    assert not (tmp_path / "c2").exists()


@needs_gpt2
def test_seed_script_seeds_once(tmp_path):
    with open(GPT2_RANKS, "rb") as f:
        sdist = fake_sdist(tmp_path, f.read())
    cache = tmp_path / "cache"
    assert "GPT-2 ranks written to" in run_seed(cache, sdist)
    assert "already in" in run_seed(cache, sdist)
    assert os.listdir(cache) == ["0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"]
