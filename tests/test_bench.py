"""The benchmark's mechanics at a tiny size: its rows, ratios, pass counts, gradient check, the
reference-strategy baseline, and its worker subprocess. Timings at this size mean nothing."""

import importlib.util
import json
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("tsam_bench", os.path.join(ROOT, "bench", "bench.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from reference_strategy import ReferenceStrategyPass  # noqa: E402  (bench.py put bench/ on sys.path)
from tsam_ext.runtime import pipeline# noqa: E402
from tsam_ext.core.controller import GuidedPass  # noqa: E402
from tsam_ext.core.schedule import Refinement  # noqa: E402
from tsam_ext.core.settings import Settings  # noqa: E402

QUICK_CFG = dict(bench.QUICK, arch="sd1", sampler="DPM++ 2M", batch=1, device="cpu", threads=1)


@pytest.fixture(scope="module")
def model():
    # One thread, as the workers here: two OpenMP threads on a busy 2-core machine crawl. No VAE:
    # its decode would be most of each tiny run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield bench.load_model(bench.QUICK["model_channels"], "cpu", decoder=False)
    torch.set_num_threads(threads)


def test_quick_report_has_every_row_with_the_targets_quantities(model, monkeypatch, capsys, tmp_path):
    # The workers run in this process on one model: the subprocess is tested on its own below.
    monkeypatch.setattr(bench, "run_worker", lambda job: bench.gradient_check(model, job) if job["job"] == "gradient"
                        else bench.time_variant(model, job))
    path = tmp_path / "report.json"
    assert bench.main(["--quick", "--threads", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    rows = report["sizes"]["64"]["rows"]

    assert list(rows) == list(bench.VARIANTS)
    for key, (label, _, _) in bench.VARIANTS.items():
        assert f"| {label} | " in out
        assert "error" not in rows[key]
        assert all(math.isfinite(rows[key][q]) and rows[key][q] > 0 for q in ("median_s", "time_ratio", "memory_ratio"))
        assert rows[key]["peak_bytes"] > 100 * 2 ** 20  # CLIP-L alone is ~0.5 GB
    assert rows["vanilla"]["time_ratio"] == rows["vanilla"]["memory_ratio"] == 1

    passes = {key: r["guided_passes"][0] for key, r in rows.items()}
    assert passes["vanilla"] == passes["disabled"] == 0
    assert passes["fast"] == 2  # 60% of 3 steps, one pass each
    assert passes["reference"] > passes["fast"]  # refinement at steps 0 and 1
    assert passes["ref_strategy"] == passes["reference"] + 2  # same updates + one discarded forward per refinement step

    checks = {c["what"].split(",")[0].split(":")[0]: c for c in report["sizes"]["64"]["checks"]}
    assert list(checks) == ["T-SAM disabled", "fast preset", "reference settings", "added time vs reference strategy",
                            "peak memory vs vanilla"]
    for what, c in checks.items():
        if c["value"] is None:  # only a saving over no added time is undefined (timing noise at this size)
            assert what == "added time vs reference strategy" and rows["reference"]["added_s"] <= 0
        else:  # whether the target is met: test_each_check_says_no_past_its_target
            assert 0 < c["value"] < math.inf and c["met"] in (True, False)
    assert out.count("| check | value | target | met |") == 1

    grad = report["gradient"]["64"]
    assert grad["max_abs_grad"] > 0  # an all-zero gradient would make the comparison empty
    assert grad["relative_diff"] <= bench.GRADIENT_TOLERANCE
    assert grad["loss_truncated"] == pytest.approx(grad["loss_full"], rel=1e-6)
    assert "| 64 px |" in out and out.split("| 64 px |")[1].split("\n")[0].endswith("| yes |")


def test_reference_strategy_makes_the_same_updates_the_reference_way(model):
    """Same losses and latents as T-SAM; but one image per call, full passes, weights requiring grad."""
    unet, seen = model.unet, {}

    def spy(key):
        def hook(module, args):
            if torch.is_grad_enabled():
                seen.setdefault(key, []).append((args[0].shape[0], unet.input_blocks[0][0].weight.requires_grad))
        return hook

    results, settings = {}, Settings(enabled=True, refine_iterations=1)
    for make_pass in (GuidedPass, ReferenceStrategyPass):
        handles = [unet.register_forward_pre_hook(spy((make_pass, "call"))),
                   unet.output_blocks[-1].register_forward_pre_hook(spy((make_pass, "full")))]
        try:
            results[make_pass] = pipeline.generate(model, [bench.PROMPT] * 2, [1, 2], settings, steps=2, width=64,
                                                   height=64, log=lambda _m: None, refinement=Refinement(extra=0),
                                                   make_pass=make_pass)
        finally:
            for h in handles:
                h.remove()

    core, ref = results[GuidedPass], results[ReferenceStrategyPass]
    torch.testing.assert_close(ref.latents, core.latents, rtol=1e-4, atol=1e-4)
    assert len(ref.guided.trace) == len(core.guided.trace) == 1
    for img, losses in core.guided.trace[0].losses.items():
        assert ref.guided.trace[0].losses[img] == pytest.approx(losses, rel=1e-4)
    assert {c for c in seen[(GuidedPass, "call")]} == {(2, False)} and (GuidedPass, "full") not in seen
    assert {c for c in seen[(ReferenceStrategyPass, "call")]} == {(1, True)}
    assert len(seen[(ReferenceStrategyPass, "full")]) == len(seen[(ReferenceStrategyPass, "call")])
    assert ref.guided.discarded == 2  # step 0 is the one refinement step: one discarded forward per image
    assert all(p.requires_grad for p in unet.parameters())  # the core's frozen() restored them


def test_failed_variant_is_reported_and_the_ratios_are_right():
    ok = lambda s: {"seconds": [s], "peak_bytes": 1000, "guided_passes": [0]}  # noqa: E731
    results = {"vanilla": ok(2.0), "disabled": ok(2.0), "reference": ok(3.5), "fast": ok(2.5),
               "ref_strategy": {"error": "OutOfMemoryError: CUDA out of memory | tried"}}
    summary = bench.summarize(results)
    table = bench.size_table(512, summary, QUICK_CFG)
    assert "| reference implementation's strategy | failed: OutOfMemoryError: CUDA out of memory / tried |" in table
    met = {c["what"].split(",")[0].split(":")[0]: (c["value"], c["met"]) for c in summary["checks"]}
    assert met["fast preset"] == (1.25, True) and met["reference settings"] == (1.75, True)
    assert met["added time vs reference strategy"] == (None, None)
    results["ref_strategy"] = ok(5.0)
    assert bench.checks(bench.summarize(results)["rows"])[3]["value"] == pytest.approx(2.0)  # (5 - 2) / (3.5 - 2)


@pytest.mark.parametrize("past", [False, True])
def test_each_check_says_no_past_its_target(past):
    """Every target with a measured value just inside it, or just past it: "yes" / "**no**"."""
    d = 0.01 if past else -0.01
    ok = lambda s, peak=1000: {"seconds": [s], "peak_bytes": peak, "guided_passes": [0]}  # noqa: E731
    added = 100.0 * (1.05 + d)  # the reference settings' time over vanilla's 100 s
    results = {"vanilla": ok(100.0), "disabled": ok(100.0 * (1 + bench.DISABLED_TOLERANCE + d)),
               "fast": ok(100.0 * (1.35 + d)), "reference": ok(100.0 + added, peak=1000 * (1.3 + d)),
               "ref_strategy": ok(100.0 + added * (1.4 - d))}  # saving: (strategy - vanilla) / (reference - vanilla)
    summary = bench.summarize(results)
    lines = [line for line in bench.size_table(512, summary, QUICK_CFG).splitlines()
             if line.startswith("| ") and line.count("|") == 5 and not line.startswith("| check")]
    assert [c["met"] for c in summary["checks"]] == [not past] * 5
    assert len(lines) == 5 and all(line.endswith("| **no** |" if past else "| yes |") for line in lines)


def test_worker_runs_in_a_fresh_process_and_reports_its_failure():
    job = dict(QUICK_CFG, job="gradient")
    result = bench.run_worker(job)
    assert result["64"]["relative_diff"] <= bench.GRADIENT_TOLERANCE and result["64"]["max_abs_grad"] > 0
    assert "KeyError" in bench.run_worker({"job": "variant"})["error"]
