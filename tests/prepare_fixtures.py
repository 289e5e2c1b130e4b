"""
Generated inputs for tests/test_prepare.py and bench/bench_prepare.py: English-like web text
(words drawn with their frequencies in CPython's documentation, sentences and paragraphs of
varied lengths) in FineWeb's parquet schema, plus the awkward documents real files hold.
"""
import collections
import functools
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.fineweb_single.demo_corpus import FINEWEB_SCHEMA


@functools.lru_cache(maxsize=1)
def vocabulary():
    """(words, probabilities): the words of pydoc_data.topics with their frequencies."""
    from pydoc_data.topics import topics
    counts = collections.Counter(re.findall(r"[A-Za-z]+(?:'[a-z]+)?", " ".join(topics.values()).lower()))
    words, freq = zip(*counts.most_common())
    p = np.array(freq, dtype=np.float64)
    return np.array(words, dtype=object), p / p.sum()


def english_like_docs(n_docs, seed=0, mean_words=600):
    """n_docs documents of varied length (lognormal, median ~mean_words * 0.8 words)."""
    rng = np.random.default_rng(seed)
    words, p = vocabulary()
    cumulative = np.cumsum(p)
    docs = []
    for n_words in np.maximum(5, rng.lognormal(np.log(mean_words * 0.8), 0.7, n_docs).astype(int)):
        picked = words[np.minimum(np.searchsorted(cumulative, rng.random(n_words)), len(words) - 1)].tolist()
        # sentence ends every ~6-30 words, a paragraph break every few sentences, some numbers
        end = 0
        while end < n_words:
            start, end = end, min(n_words, end + int(rng.integers(6, 30)))
            picked[start] = picked[start].capitalize()
            if rng.random() < 0.15:
                picked[start + (end - start) // 2] += ","
            if rng.random() < 0.1:
                picked[start + 1 if start + 1 < end else start] += f" {int(rng.integers(0, 3000))}"
            picked[end - 1] += "." if rng.random() < 0.85 else ("?" if rng.random() < 0.5 else "!")
            if rng.random() < 0.25 and end < n_words:
                picked[end - 1] += "\n\n"
        docs.append(" ".join(picked).replace("\n\n ", "\n\n"))
    return docs


# Documents that real files contain and that the pipeline must handle exactly.
AWKWARD_DOCS = [
    "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9 \u2014 \u201cquotes\u201d and \u2026 ellipses.",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u7d75\u6587\u5b57 \U0001f600\U0001f680 mixed with English.",
    "A literal <|endoftext|> inside a document is ordinary text, not a separator.",
    "  leading and trailing spaces, tabs\tand\r\nWindows line ends  ",
    "x",
]


def fineweb_table(texts, start_id=0):
    """A table in FineWeb's schema around `texts` (None for a null text)."""
    n = len(texts)
    return pa.table({
        "text": texts,
        "id": [f"<urn:uuid:{start_id + i:08d}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.com/page/{start_id + i}" for i in range(n)],
        "date": ["2024-02-21T12:00:00Z"] * n,
        "file_path": ["s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": [0.95] * n,
        "token_count": [None if t is None else len(t) // 4 for t in texts],
    }, schema=FINEWEB_SCHEMA)


def write_fineweb_parquet(path, texts, row_group_size=64, start_id=0):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(fineweb_table(texts, start_id), path, row_group_size=row_group_size)
    return path


def fixture_texts(n_docs=240, seed=0):
    """Varied documents with known specials mixed in: 3 null, 4 empty or blank, and exact
    duplicates (docs 10 and 11 again, doc 10 twice more) -> 4 duplicates found."""
    texts = english_like_docs(n_docs, seed=seed, mean_words=40) + AWKWARD_DOCS
    texts[7:7] = [None]
    texts[30:30] = [""]
    texts[50:50] = ["   \n\t "]
    texts[51:51] = [None, ""]
    texts[90:90] = [texts[10], texts[11]]
    texts += [texts[10], None, "", texts[10]]
    return texts


FIXTURE_SPECIALS = {"null": 3, "empty": 4, "duplicates": 4}


def write_text_batches(path, batches, row_group_size):
    """Write a large parquet batch by batch (bounded memory), for the bench."""
    writer = None
    start = 0
    try:
        for texts in batches:
            table = fineweb_table(texts, start)
            if writer is None:
                writer = pq.ParquetWriter(path, FINEWEB_SCHEMA)
            writer.write_table(table, row_group_size=row_group_size)
            start += len(texts)
    finally:
        if writer is not None:
            writer.close()
    return path
