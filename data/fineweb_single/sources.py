"""
The input side of prepare.py: which files to read, checking them before any work starts,
and streaming their documents in batches (never a whole file in memory).

- .parquet: one document per row of the text column (FineWeb: text, id, dump, url, date,
  file_path, language, language_score, token_count), read in record batches with pyarrow.
- .jsonl: one JSON object per line, the document in its text column.
- .txt: documents separated by lines holding only <|endoftext|>; without one, the file is
  a single document.
"""
import copy
import glob
import hashlib
import itertools
import json
import os
import re
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from errors import UserError

KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".txt": "text"}
TXT_SEPARATOR = b"<|endoftext|>"
TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def find_input_files(specs):
    """The files named by --input: files, folders (searched recursively) or globs, in sorted order."""
    files = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(p for p in glob.glob(os.path.join(spec, "**", "*"), recursive=True)
                           if os.path.isfile(p) and file_kind(p))
            if not found:
                raise UserError(f"no .parquet, .jsonl or .txt files in the folder {spec}; "
                                f"give a folder that holds some, or the files themselves")
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                raise UserError(f"no file matches {spec}; check the pattern (quote it so the shell "
                                f"does not expand it)")
        elif os.path.isfile(spec):
            found = [spec]
        elif os.path.exists(spec):
            raise UserError(f"{spec} is not a regular file; give a .parquet, .jsonl or .txt file or a folder")
        else:
            raise UserError(f"{spec} not found; give an existing .parquet, .jsonl or .txt file, "
                            f"a folder or a glob (download a FineWeb parquet from huggingface.co/datasets/"
                            f"HuggingFaceFW/fineweb), or run with --demo")
        files.extend(found)
    unique = []
    for path in files:  # the same file named twice is read once
        if os.path.realpath(path) not in map(os.path.realpath, unique):
            unique.append(path)
    for path in unique:
        if file_kind(path) is None:
            raise UserError(f"{path}: unsupported file type; give .parquet (FineWeb), .jsonl or .txt files")
    return unique


def file_kind(path):
    return KINDS.get(os.path.splitext(path)[1].lower())


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Source:
    """One input file, checked on creation: it opens, and it has the text column."""

    def __init__(self, path, text_column):
        self.path = path
        self.kind = file_kind(path)
        self.text_column = text_column
        self.size = os.path.getsize(path)
        self.rows = None  # known up front for parquet only (from its footer)
        self.bytes_read = 0  # how far batches() has got through the file, for progress estimates
        if self.kind == "parquet":
            self._check_parquet()
        elif self.kind == "jsonl":
            self._check_jsonl()
        else:
            self._check_readable()

    def _check_readable(self):
        try:
            with open(self.path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise UserError(f"cannot read {self.path} ({e.strerror}); check its permissions")

    def _check_parquet(self):
        self._check_readable()
        try:
            pf = pq.ParquetFile(self.path, pre_buffer=False)  # pre-buffering would read the whole file
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{self.path} is not a readable parquet file, or it is truncated "
                            f"({first_sentence(e)}); download it again and compare its size")
        schema = pf.schema_arrow
        if self.text_column not in schema.names:
            raise UserError(f"{self.path} has no column {self.text_column!r}; its columns are "
                            f"{', '.join(schema.names)}; pass --text-column NAME")
        column_type = schema.field(self.text_column).type
        if column_type not in TEXT_TYPES:
            raise UserError(f"column {self.text_column!r} of {self.path} holds {column_type}, not text; "
                            f"pass the text column with --text-column (columns: {', '.join(schema.names)})")
        self.rows = pf.metadata.num_rows

    def _check_jsonl(self):
        self._check_readable()
        with open(self.path, "rb") as f:
            for line_number, line in enumerate(f, 1):
                if line.strip():
                    self._jsonl_text(line, line_number)  # the first record shows column and format
                    return

    def batches(self, batch_rows):
        """Yield (first row number, texts) with at most batch_rows texts each: a list, or for
        parquet an Arrow array or a ParquetRows (texts_of makes either a list); a text is a
        str, bytes for a binary column (decoded by the caller), or None."""
        read = {"parquet": self._parquet_batches, "jsonl": self._jsonl_batches,
                "text": self._text_batches}[self.kind]
        yield from read(batch_rows)

    def _parquet_batches(self, batch_rows):
        # Row groups of at most batch_rows rows (FineWeb's have 1000) are handed on by number
        # (ParquetRows), so that the worker that tokenizes them also reads and decodes them:
        # the text never passes through this process. Larger row groups are read here, in
        # record batches of batch_rows rows, and handed on as Arrow arrays (plain buffers when
        # pickled), which keeps the memory bounded however large a row group is.
        pf = pq.ParquetFile(self.path, pre_buffer=False)  # pre-buffering would read a whole group
        row, small = 0, None  # small: the row groups gathered for the next task
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            if small is not None and small.rows + n > batch_rows:
                self.bytes_read = self.size * row // max(self.rows, 1)
                yield small.first_row, small
                small = None
            if n > batch_rows:
                yield from self._read_row_group(pf, group, row, batch_rows)
            else:
                small = small if small is not None else ParquetRows(self.path, self.text_column, row)
                small.add(group, n)
            row += n
        if small is not None:
            self.bytes_read = self.size
            yield small.first_row, small

    def _read_row_group(self, pf, group, first_row, batch_rows):
        row = first_row
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group],
                                         columns=[self.text_column], use_threads=False):
                self.bytes_read = self.size * (row + batch.num_rows) // max(self.rows, 1)
                yield row, batch.column(0)
                row += batch.num_rows
        except (pa.ArrowException, OSError) as e:
            raise corrupt_parquet(self.path, row, e)

    def _jsonl_batches(self, batch_rows):
        return in_batches(self._jsonl_texts(), batch_rows)

    def _jsonl_texts(self):
        with open(self.path, "rb") as f:
            for line_number, line in enumerate(f, 1):
                self.bytes_read += len(line)
                if line.strip():
                    yield self._jsonl_text(line, line_number)

    def _jsonl_text(self, line, line_number):
        where = f"{self.path} line {line_number}"
        try:
            record = json.loads(line)
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: invalid UTF-8 (byte {e.start}); convert the file to UTF-8")
        except ValueError as e:
            raise UserError(f"{where} is not JSON ({e}); give one JSON object per line")
        if not isinstance(record, dict):
            raise UserError(f"{where} is not a JSON object; give one object per line with a "
                            f"{self.text_column!r} field")
        if self.text_column not in record:
            raise UserError(f"{where} has no field {self.text_column!r}; its fields are "
                            f"{', '.join(record)}; pass --text-column NAME")
        text = record[self.text_column]
        if text is not None and not isinstance(text, str):
            raise UserError(f"{where}: field {self.text_column!r} is a {type(text).__name__}, not text; "
                            f"pass the text field with --text-column")
        return text

    def _text_batches(self, batch_rows):
        return in_batches(self._text_texts(), batch_rows)

    def _text_texts(self):
        for line_number, doc in self._text_documents():
            try:
                yield doc.decode("utf-8")
            except UnicodeDecodeError as e:
                line = line_number + doc[:e.start].count(b"\n")
                raise UserError(f"{self.path} line {line}: invalid UTF-8 (byte 0x{doc[e.start]:02x}); "
                                f"convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")

    def _text_documents(self):
        """(first line number, bytes) of each document of a .txt file."""
        lines, start = [], 1
        with open(self.path, "rb") as f:
            for line_number, line in enumerate(f, 1):
                self.bytes_read += len(line)
                if line.strip() == TXT_SEPARATOR:
                    yield start, b"".join(lines).rstrip(b"\r\n")
                    lines, start = [], line_number + 1
                else:
                    lines.append(line)
        yield start, b"".join(lines).rstrip(b"\r\n")


class ParquetRows:
    """Consecutive whole row groups of a parquet file, named rather than read: the process that
    tokenizes them reads their text column (read())."""

    def __init__(self, path, text_column, first_row):
        self.path, self.text_column, self.first_row = path, text_column, first_row
        self.groups, self.rows = [], 0
        self.skip = 0  # rows of the groups before these (a part made by batch_part)

    def add(self, group, rows):
        self.groups.append(group)
        self.rows += rows

    def __len__(self):
        return self.rows

    def read(self):
        try:
            table = open_parquet(self.path).read_row_groups(self.groups, columns=[self.text_column],
                                                            use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise corrupt_parquet(self.path, self.first_row, e)
        return table.column(0).slice(self.skip, self.rows)


_open_parquet = {}  # (process id, path) -> ParquetFile: each worker parses a file's footer once


def open_parquet(path):
    key = (os.getpid(), path)  # a forked worker opens its own, not its parent's
    if key not in _open_parquet:
        _open_parquet.clear()  # one file at a time: the inputs are read in order
        _open_parquet[key] = pq.ParquetFile(path, pre_buffer=False)
    return _open_parquet[key]


def corrupt_parquet(path, row, error):
    return UserError(f"{path} is corrupt near row {row} ({first_sentence(error)}); download it again")


def batch_part(batch, start, stop):
    """Rows start:stop of a batch from Source.batches, as cheap to send to a worker as their size."""
    if isinstance(batch, ParquetRows):  # the same row groups, sliced once read
        part = copy.copy(batch)
        part.first_row, part.skip, part.rows = batch.first_row + start, batch.skip + start, stop - start
        return part
    if isinstance(batch, pa.Array):  # a copy: a slice would be pickled with its whole parent
        return pa.concat_arrays([batch[start:stop]])
    return batch[start:stop]


def texts_of(batch, path, first_row):
    """A batch from Source.batches as a list of str / bytes / None."""
    if isinstance(batch, ParquetRows):
        batch = batch.read()
    if not isinstance(batch, (pa.Array, pa.ChunkedArray)):
        return batch
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:  # Arrow does not check UTF-8 when reading parquet; Python does
        bad = next(i for i in range(len(batch)) if not valid_utf8(batch[i]))
        raise UserError(f"{path} row {first_row + bad}: the text is not valid UTF-8; "
                        f"repair or drop that row (or the file)")


def valid_utf8(scalar):
    try:
        scalar.as_py()
        return True
    except UnicodeDecodeError:
        return False


def first_sentence(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return re.split(r"(?<=\.) ", text)[0].rstrip(".")


class FileHasher:
    """sha256 of the input files, computed in a thread while tokenizing (hashlib frees the GIL)."""

    def __init__(self, paths):
        self.digests = {}
        self.thread = threading.Thread(target=lambda: self.digests.update(
            (p, file_sha256(p)) for p in paths), daemon=True)
        self.thread.start()

    def result(self):
        self.thread.join()
        return self.digests


def in_batches(texts, batch_rows):
    """(first row number, list of up to batch_rows texts) from an iterator of texts."""
    first = 0
    while batch := list(itertools.islice(texts, batch_rows)):
        yield first, batch
        first += len(batch)
