"""
GPT-2's tokenizer files for Hugging Face (vocab.json, merges.txt, tokenizer_config.json), written
from tiktoken's GPT-2 ranks so that no download is needed.

The ranks are GPT-2's encoder ids (r50k_base = encoder.json), so vocab.json maps each token's
bytes, spelled in GPT-2's byte-to-unicode alphabet, to its rank. merges.txt lists, in rank order,
the pair each multi-byte token is merged from: the two parts that byte-pair encoding the token
with only the lower ranks leaves (the inverse of how tiktoken builds ranks from data-gym files).
"""
import json
import os

from errors import UserError
from tokenizer import EOT_TEXT, GPT2_EOT


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_parts(ranks, token, max_rank):
    """The parts byte-pair encoding leaves of `token` when only merges ranked below max_rank exist."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def vocab_and_merges(ranks):
    """({unicode token: id}, [(left, right), ...] in rank order) from tiktoken's {bytes: rank}."""
    byte_char = bytes_to_unicode()

    def spell(token):
        return "".join(byte_char[b] for b in token)

    vocab, merges = {}, []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        vocab[spell(token)] = rank
        if len(token) > 1:
            parts = bpe_parts(ranks, token, rank)
            if len(parts) != 2:
                raise UserError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens; "
                                f"these ranks are not a byte-pair encoding")
            merges.append((spell(parts[0]), spell(parts[1])))
    return vocab, merges


def gpt2_ranks(encoding):
    """{token bytes: rank} of tiktoken's GPT-2 Encoding, the end-of-text token left out."""
    return {encoding.decode_single_token_bytes(i): i for i in range(GPT2_EOT)}


def write_gpt2_tokenizer(folder, encoding, model_max_length):
    """GPT-2's tokenizer files, as the hub's gpt2 repository has them, into folder."""
    vocab, merges = vocab_and_merges(gpt2_ranks(encoding))
    vocab[EOT_TEXT] = GPT2_EOT
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": model_max_length,
              "add_prefix_space": False, "bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({k: EOT_TEXT for k in ("bos_token", "eos_token", "unk_token")}, f, indent=2)
