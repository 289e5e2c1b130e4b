"""One module per family of findings; each exposes detect(run) -> list[Finding]."""
