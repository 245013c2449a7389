"""The benchmark harness's own logic (tests/benchmarks is not collected: its runs take minutes):
the lanes read from the consumers' logs, the repeat statistics, the per-contender caps, and
issue 31's targets judged as met, missed, not run or not measured."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.benchmarks import targets
from tests.benchmarks.engine import lanes_logged
from tests.benchmarks.run import MAX_N, parse_caps, repeat_stats

LANES_FORMAT = "Message %s: delivering over %s lanes."  # messaging/engine/delivery.py
BENCH_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"


def delivery_line(pid: int, message_id: int, lanes: int) -> str:
    """A line as a consumer writes it: delivery's own format string, the benchmark's format."""
    record = logging.LogRecord(
        "messaging.engine.delivery", logging.INFO, "", 0, LANES_FORMAT, (message_id, lanes), None
    )
    record.process = pid
    return logging.Formatter(BENCH_FORMAT).format(record) + "\n"


def test_delivery_still_logs_the_lanes_line_the_harness_reads():
    source = (Path(__file__).resolve().parents[2] / "messaging/engine/delivery.py").read_text()
    assert f'"{LANES_FORMAT}"' in source


def test_lanes_are_the_most_each_worker_logged_for_that_message():
    log = "".join(
        [
            delivery_line(101, 7, 2),
            delivery_line(101, 7, 8),
            delivery_line(202, 7, 4),
            delivery_line(202, 8, 16),  # another message
            "[2026-12-05 11:35:57,469] INFO:huey.consumer:16372:Huey consumer started\n",
        ]
    )
    assert lanes_logged(log, 7) == [8, 4]
    assert lanes_logged(log, 9) == []


def test_repeat_stats_spread_is_range_over_median():
    stats = repeat_stats([{"msgs_per_s": v} for v in (100.0, 90.0, 110.0, 105.0, 95.0)])
    assert stats == {"runs": 5, "median": 100.0, "min": 90.0, "max": 110.0, "spread": pytest.approx(0.2)}


def test_caps_override_the_defaults_and_reject_unknown_contenders():
    caps = parse_caps("post_office=100000,ceiling=none")
    assert caps["post_office"] == 100_000 and caps["ceiling"] is None
    assert caps["repeats"] == MAX_N["repeats"]
    with pytest.raises(SystemExit):
        parse_caps("ours=10")
    with pytest.raises(SystemExit):
        parse_caps("post_office")


def run(msgs: float, first: float = 0.5, rss: float = 80.0) -> dict:
    return {"msgs_per_s": msgs, "first_email_s": first, "worker_peak_rss_mb": rss}


def by_id(found: list[dict]) -> dict[str, dict]:
    return {t["id"]: t for t in found}


def test_targets_met_missed_not_run_and_not_measured():
    runs = [run(v) for v in (300.0, 310.0, 290.0)]
    results = {
        "profiles": {
            "latency_100ms": {
                "sizes": {
                    "5000": {
                        "ours_runs": runs,
                        "ours_stats": repeat_stats(runs),
                        "ours_vs_post_office": 4.1,
                        "ours_vs_ceiling": 0.7,
                    },
                    "100000": {
                        "ours_runs": [run(250.0)],
                        "ours_stats": repeat_stats([run(250.0)]),
                        "post_office_not_run": "not run: N above --max-n post_office=5,000",
                        "ours_vs_ceiling": 0.9,
                    },
                }
            },
            "instant": {
                "sizes": {
                    "10": {"ours_runs": [run(50.0, first=0.2, rss=70.0)]},
                    "10000": {"ours_runs": [run(400.0, rss=80.0)]},
                    "100000": {"ours_runs": [run(420.0, first=3.5, rss=104.0)]},
                }
            },
        }
    }
    found = by_id(targets.evaluate(results))
    assert found["latency_100ms_5000_ours_vs_post_office"]["result"] == "met"
    assert found["latency_100ms_5000_ours_vs_ceiling"]["result"] == "missed"
    assert found["latency_100ms_5000_ours_spread"]["result"] == "met (3 runs, not 5)"
    assert found["latency_100ms_100000_ours_vs_post_office"]["result"].startswith("not run: N above")
    assert found["latency_100ms_100000_ours_vs_ceiling"]["result"] == "met"
    assert found["latency_100ms_100000_ours_spread"]["result"] == "not measured: 1 run"
    assert found["latency_20ms_300_ours_vs_post_office"]["result"] == "not measured"
    assert found["instant_10_first_email_s"]["result"] == "met"
    assert found["instant_100000_first_email_s"]["result"] == "missed"
    rss = found["instant_rss_100000_vs_10000"]
    assert rss["measured"] == pytest.approx(1.3) and rss["result"] == "missed"
    # No ratio against post_office where it did not run at that N.
    assert found["instant_10000_ours_vs_post_office"]["measured"] is None
