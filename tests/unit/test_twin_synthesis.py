"""The twin's synthesis cache: one assembly per sources *and* clone. An assembly synthesized with
`cdk synth --no-staging` names every asset by its source's absolute path (the Glue scripts the
twin runs, the Docker build contexts), so it only serves the clone that synthesized it."""

from __future__ import annotations

import json
import shutil

from churnops.local.synthesis import synth_fingerprint


def _sources(root):
    (root / "glue_jobs").mkdir(parents=True)
    (root / "app.py").write_text("print('app')\n")
    (root / "cdk.json").write_text(json.dumps({"app": "python app.py"}))
    (root / "glue_jobs" / "ingest_customers.py").write_text("def main(): ...\n")
    return root


def test_the_same_sources_in_another_clone_synthesize_again(tmp_path):
    first = _sources(tmp_path / "clone-a")
    second = tmp_path / "clone-b"
    shutil.copytree(first, second)
    assert synth_fingerprint(first) == synth_fingerprint(first)
    # a CI machine that ran the demo in one clone (since deleted) and the tests in another
    # reused the first clone's assembly, whose script paths no longer existed
    assert synth_fingerprint(first) != synth_fingerprint(second)


def test_an_edited_glue_script_synthesizes_again(tmp_path):
    root = _sources(tmp_path / "clone")
    before = synth_fingerprint(root)
    (root / "glue_jobs" / "ingest_customers.py").write_text("def main(): return 1\n")
    assert synth_fingerprint(root) != before
