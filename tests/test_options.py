"""AnalysisOptions: one validated, frozen options object shared by analyze, the CLI and the facade."""
import dataclasses

import numpy as np
import pytest

import htsr
from htsr.options import AnalysisOptions


def test_fingerprint_tracks_numeric_options_only():
    base = AnalysisOptions()
    assert base.fingerprint() == AnalysisOptions().fingerprint()          # stable
    assert len(base.fingerprint()) == 16
    for change in ({"precision": "float32"}, {"normalize": True}, {"pool": False},
                   {"ks": "distinct"}, {"ww_parity": False}, {"tolerance": 1e-5},
                   {"method": "randomized", "k": 5}, {"conv2d_norm": False}):
        assert base.replace(**change).fingerprint() != base.fingerprint(), change
    for same in ({"threads": 1}, {"prefetch": 2}, {"progress": True}, {"layers": [3]},
                 {"names": ["q"]}, {"min_evals": 1}, {"max_N": 10}):
        assert base.replace(**same).fingerprint() == base.fingerprint(), same
    assert set(AnalysisOptions.NUMERIC).isdisjoint(AnalysisOptions.SELECTION)
    groups = set(AnalysisOptions.NUMERIC) | set(AnalysisOptions.SELECTION) | set(AnalysisOptions.EXECUTION)
    assert groups == {f.name for f in dataclasses.fields(AnalysisOptions)}


def test_options_are_frozen_and_validated():
    o = AnalysisOptions(layers=[1, "x"], layer_types="Dense")
    assert o.layers == (1, "x") and o.layer_types == ("dense",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.precision = "float32"
    with pytest.raises(TypeError, match="bogus"):
        AnalysisOptions.build(bogus=1)
    with pytest.raises(ValueError, match="precision"):
        AnalysisOptions(precision="float16")
    with pytest.raises(ValueError, match="needs k"):
        AnalysisOptions(method="randomized")
    with pytest.raises(ValueError, match="layer type"):
        AnalysisOptions(layer_types=["norm"])
    with pytest.raises(ValueError, match="threads"):
        AnalysisOptions(threads=-1)
    with pytest.raises(TypeError, match="layers"):
        AnalysisOptions(layers=[True])


def test_analyze_takes_options_object_and_keywords_alike():
    rng = np.random.default_rng(0)
    sd = {"a.weight": rng.standard_normal((64, 32)).astype(np.float32),
          "b.weight": rng.standard_normal((48, 40)).astype(np.float32)}
    opts = AnalysisOptions(precision="float32", threads=1)
    by_obj = htsr.analyze(sd, opts).drop(columns="seconds")
    by_kw = htsr.analyze(sd, precision="float32", threads=1).drop(columns="seconds")
    assert by_obj.equals(by_kw)
    over = htsr.analyze(sd, opts, precision="float64").drop(columns="seconds")
    assert not over["lambda_max"].equals(by_obj["lambda_max"]) or \
        not over["sv_min"].equals(by_obj["sv_min"])
    with pytest.raises(TypeError, match="bogus"):
        htsr.analyze(sd, bogus=True)
