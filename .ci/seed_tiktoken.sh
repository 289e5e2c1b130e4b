#!/usr/bin/env bash
# Seed a tiktoken cache folder with GPT-2's BPE ranks, so that the gpt2 tokenizer works offline.
#
#   .ci/seed_tiktoken.sh [CACHE_DIR]      (default: $TIKTOKEN_CACHE_DIR, else ~/.cache/tiktoken)
#
# The ranks come from the openai-whisper sdist on PyPI (whisper/assets/gpt2.tiktoken, the same
# bytes as tiktoken's r50k_base.tiktoken, checked by sha256). They are stored under the name
# tiktoken itself uses for r50k_base (sha1 of the blob URL), which tokenizer.py also finds.
# Set WHISPER_SDIST=path/to/openai_whisper-*.tar.gz to use a local copy instead of PyPI.
# Idempotent and quiet; when it cannot seed, it says why and exits 0 (tests then skip GPT-2 parts).
set -u

CACHE_DIR="${1:-${TIKTOKEN_CACHE_DIR:-$HOME/.cache/tiktoken}}"
URL="https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
SHA256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER="openai-whisper==20250625"
TARGET="$CACHE_DIR/$(printf %s "$URL" | sha1sum | cut -d' ' -f1)"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }
give_up() { echo "seed_tiktoken: $1; GPT-2 tokenizer not seeded (use --tokenizer byte, or --bpe-file PATH)"; exit 0; }

if sha_ok "$TARGET"; then
    echo "seed_tiktoken: GPT-2 ranks already in $CACHE_DIR"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

SDIST="${WHISPER_SDIST:-}"
if [ -z "$SDIST" ]; then
    # --no-binary: the sdist is ~800 KB, the wheel carries nothing more we need
    python3 -m pip download --quiet --no-deps --no-binary :all: "$WHISPER" -d "$WORK" >"$WORK/pip.log" 2>&1 \
        || give_up "pip download $WHISPER failed ($(tail -n 1 "$WORK/pip.log"))"
    SDIST="$(ls "$WORK"/openai_whisper-*.tar.gz 2>/dev/null | head -n 1)"
fi
[ -f "$SDIST" ] || give_up "no whisper sdist found"

tar -xzf "$SDIST" -C "$WORK" --wildcards '*/whisper/assets/gpt2.tiktoken' 2>/dev/null \
    || give_up "$SDIST has no whisper/assets/gpt2.tiktoken"
RANKS="$(ls "$WORK"/*/whisper/assets/gpt2.tiktoken | head -n 1)"
sha_ok "$RANKS" || give_up "gpt2.tiktoken in $SDIST has an unexpected sha256"

mkdir -p "$CACHE_DIR" || give_up "cannot create $CACHE_DIR"
# copy then rename: a reader never sees half a file
cp "$RANKS" "$TARGET.tmp.$$" && mv -f "$TARGET.tmp.$$" "$TARGET" || give_up "cannot write $TARGET"
echo "seed_tiktoken: GPT-2 ranks written to $TARGET"
