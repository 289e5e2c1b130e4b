"""
Live diagnosis inside train.py: feed it every record appended to metrics.jsonl;
on eval records it runs the cheap detectors and hands back what is new.

    monitor = LiveMonitor(config, data, model)
    for f in monitor.observe(record):   # -> [{'id': ..., 'message': ...}], warning or worse, each id once
        print(f"diagnose: {f['message']}")
    if monitor.stop_reason:             # set only with config['early_stop'] and confirmed overfitting
        ...stop, keep best.pt...
"""
from diagnose.findings import SEVERITIES


class LiveMonitor:
    def __init__(self, config: dict, data: dict, model: dict):
        self.config = dict(config or {})
        self.data = dict(data or {})
        self.model = dict(model or {})
        self.records = []
        self.reported = set()   # finding ids already handed back
        self.stop_reason = None

    def observe(self, record: dict) -> list:
        """Remember one metrics.jsonl record; on 'eval' records return the new findings
        of severity warning or worse as [{'id', 'message'}]."""
        if not isinstance(record, dict):
            return []
        self.records.append(record)
        if record.get("event") != "eval":
            return []
        from diagnose.detect import run_live
        run = self._run()
        new = []
        for f in run_live(run):
            if f.rank() < SEVERITIES.index("warning") or f.id in self.reported:
                continue
            self.reported.add(f.id)
            new.append({"id": f.id, "message": f"{f.severity}: {f.title}"})
            if (f.id == "overfit.confirmed" and self.config.get("early_stop")
                    and self.stop_reason is None):
                self.stop_reason = f"early stop: {f.title}"
        return new

    def _run(self):
        from diagnose.parse_jsonl import run_from_records
        run = run_from_records(self.records, "live")
        # train.py may call us before it has logged its 'run' record
        for have, given in ((run.config, self.config), (run.data, self.data), (run.model, self.model)):
            for k, v in given.items():
                have.setdefault(k, v)
        return run
