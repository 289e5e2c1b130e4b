"""
diagnose: say why a loss curve looks the way it does, with evidence.

    parse   (parse.py and parse_*.py)  any log -> Run          (run.py)
    detect  (detect.py, detectors/)    Run -> [Finding]        (findings.py)
    report  (report.py, plots.py, compare.py)  findings -> terminal, markdown, JSON, PNG

Torch-free: it reads logs from any nanoGPT-style trainer. `python -m diagnose --help`.
"""
