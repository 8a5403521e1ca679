"""Issue 13: a few hundred fuzzed requests to the REST upload and JSON routes
(``fuzz_rest.py`` runs thousands outside the suite): no 5xx answer beyond the reference's
own (UnknownDicomTag, 500 in Orthanc 1.10.1 too)."""
from __future__ import annotations

import warnings

from fuzz_rest import run


def test_fuzz_small(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run(300, seed=13, workdir=tmp_path)
    assert out["errors"] == [], out["errors"][:5]
    assert out["by_status"].get(200, 0) > 0 and out["by_status"].get(400, 0) > 0
