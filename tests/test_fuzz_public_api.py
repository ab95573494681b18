"""A seeded sample of the public-API fuzz (tests/fuzz_public_api.py; the full run is
`python -m tests.fuzz_public_api --calls=1200`): every bad call a clear error naming its
argument, every valid call a result with its property."""
from tests import fuzz_public_api as fuzz


def test_public_api_sample_has_no_unhelpful_crash_and_nothing_silently_wrong():
  counts, bad = fuzz.run_fuzz(calls=54, seed=1)   # 6 per entry point, ~17 s on 2 cores
  assert bad == [], bad
  assert counts["clear error"] > 0 and counts["correct result"] > 0, counts
