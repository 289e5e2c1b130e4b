"""One FineWeb parquet file (or several, or .jsonl / .txt) to train.bin / val.bin: see prepare.py."""
