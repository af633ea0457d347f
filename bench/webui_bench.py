"""T-SAM's cost as users see it: generations through a running WebUI's HTTP API.

    python bench/bench.py --webui http://127.0.0.1:7861 [--sizes 512] [--steps 10] [--repeats 1]
                          [--rows vanilla disabled fast reference] [--webui-pid PID]

Every row is a ``/sdapi/v1/txt2img`` request with the same prompt, seed, size, steps and sampler;
only T-SAM's ``alwayson_scripts`` entry differs. The rows of one repeat run one after the other
(vanilla, disabled, fast, ...), repeats cycle through all rows again, so that a change of the
machine's load spreads over every row rather than landing on one. Ratios divide medians measured
in this run. Seconds are the request's wall time (sampling, VAE decode, PNG encoding: what a user
waits for). Peak memory: the server's peak RSS (VmHWM, reset before every request through
/proc/PID/clear_refs) when ``--webui-pid`` names a local server, else not measured.
"""

import json
import os
import statistics
import time
import urllib.request

PROMPT = "a black car and a white clock"
SEED = 1234
ROWS = {  # key -> (label, T-SAM's alwayson_scripts args or None for no entry)
    "vanilla": ("vanilla (no T-SAM entry in the request)", None),
    "disabled": ("T-SAM disabled ({\"enabled\": false})", [{"enabled": False}]),
    "fast": ("T-SAM, fast preset (refine off)", [{"enabled": True, "refine": False}]),
    "reference": ("T-SAM, reference settings", [{"enabled": True, "refine": True}]),
}


def request(url: str, path: str, payload: dict | None = None, timeout: float = 3600) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def payload(key: str, size: int, steps: int, sampler: str) -> dict:
    body = {"prompt": PROMPT, "negative_prompt": "", "seed": SEED, "steps": steps, "width": size, "height": size,
            "sampler_name": sampler, "cfg_scale": 7.5, "batch_size": 1, "n_iter": 1, "send_images": False,
            "save_images": False}
    args = ROWS[key][1]
    if args is not None:
        body["alwayson_scripts"] = {"T-SAM": {"args": args}}
    return body


class ServerPeak:
    """Peak RSS of a local server process from ``reset()`` on (None without a pid)."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def reset(self) -> None:
        if self.pid:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")

    def read(self) -> int | None:
        if not self.pid:
            return None
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def guided(info: dict, key: str) -> str | None:
    """Why a T-SAM row's image is not what the row claims (None when it is)."""
    text = (info.get("infotexts") or [""])[0]
    on = "T-SAM gamma" in text
    if key in ("vanilla", "disabled"):
        return "T-SAM parameters in the infotext of an unguided row" if on else None
    if not on:
        return "no T-SAM parameters in the infotext: guidance did not run"
    for marker in ("T-SAM error", "T-SAM warning"):
        if marker in text:
            return text[text.index(marker):].split(",")[0]
    return None


def measure(url: str, rows: list[str], size: int, steps: int, sampler: str, repeats: int,
            pid: int | None, log=print) -> dict:
    """Warm-up (one 2-step request per row), then ``repeats`` cycles over the rows."""
    peak = ServerPeak(pid)
    for key in rows:
        request(url, "/sdapi/v1/txt2img", payload(key, size, 2, sampler))
    out = {key: {"label": ROWS[key][0], "seconds": [], "peak_bytes": []} for key in rows}
    for r in range(repeats):
        for key in rows:
            peak.reset()
            start = time.perf_counter()
            res = request(url, "/sdapi/v1/txt2img", payload(key, size, steps, sampler))
            seconds = time.perf_counter() - start
            problem = guided(json.loads(res.get("info", "{}")), key)
            if problem:
                out[key]["error"] = problem
            out[key]["seconds"].append(seconds)
            out[key]["peak_bytes"].append(peak.read())
            log(f"[{size} px, repeat {r + 1}] {ROWS[key][0]}: {seconds:.1f} s{' - ' + problem if problem else ''}")
    base = statistics.median(out["vanilla"]["seconds"]) if "vanilla" in out else None
    base_peak = max(out["vanilla"]["peak_bytes"]) if "vanilla" in out and pid else None
    for r in out.values():
        r["median_s"] = statistics.median(r["seconds"])
        r["time_ratio"] = r["median_s"] / base if base else None
        r["peak"] = max(r["peak_bytes"]) if pid else None
        r["memory_ratio"] = r["peak"] / base_peak if base_peak else None
    return out


def table(url: str, size: int, steps: int, sampler: str, repeats: int, result: dict, load: str) -> str:
    lines = [f"### Through the WebUI at {url}: {size}x{size} px, {steps} steps, {sampler}, batch 1", "",
             f"- \"{PROMPT}\", seed {SEED}, CFG 7.5; median of {repeats} request(s) per row, rows interleaved; "
             f"load average before/after: {load}", "",
             "| row | seconds (each) | median | time vs vanilla | peak RSS | memory vs vanilla |",
             "|---|---|---:|---:|---:|---:|"]
    for r in result.values():
        each = ", ".join(f"{s:.1f}" for s in r["seconds"])
        ratio = "n/a" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}x"
        peak = "n/a" if r["peak"] is None else f"{r['peak'] / 2 ** 20:,.0f} MiB"
        mem = "n/a" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}x"
        note = f" (**{r['error']}**)" if "error" in r else ""
        lines.append(f"| {r['label']}{note} | {each} | {r['median_s']:.1f} | {ratio} | {peak} | {mem} |")
    return "\n".join(lines) + "\n"


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"
