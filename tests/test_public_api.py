"""Every name htsr exports resolves (the model-level ones are imported lazily)."""
import subprocess
import sys

import htsr


def test_every_exported_name_resolves():
    for name in htsr.__all__:
        assert getattr(htsr, name) is not None, name
    assert {"analyze", "describe", "esd", "summary", "WeightWatcher", "iter_layers"} <= set(htsr.__all__)


def test_import_is_light():
    """`import htsr` loads the native core but neither pandas nor torch."""
    code = "import sys, htsr; bad = [m for m in ('pandas', 'torch') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
