import os
import pickle
import subprocess
import sys
import textwrap

from datasets.fingerprint import Hasher

import u2s_hf as u2s

import corpus

HASH_IN_CHILD = "import u2s_hf, datasets.fingerprint as f; print(f.Hasher.hash(u2s_hf.Inspect(face_threshold=0.4)))"


def test_same_config_same_hash_across_processes():
    child = subprocess.run([sys.executable, "-c", HASH_IN_CHILD], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == Hasher.hash(u2s.Inspect(face_threshold=0.4))


def test_different_config_different_hash():
    assert Hasher.hash(u2s.Inspect()) != Hasher.hash(u2s.Inspect(face_threshold=0.4))
    assert Hasher.hash(u2s.Edit()) != Hasher.hash(u2s.Edit(method="blur"))
    assert Hasher.hash(u2s.Inspect()) != Hasher.hash(u2s.Edit())


def test_a_used_stage_pickles_small_and_hashes_like_a_fresh_one(photos):
    stage = u2s.Inspect()
    fresh_hash = Hasher.hash(stage)
    stage({"image": [photos["astronaut"]]})  # loads both detectors into the process cache
    assert len(pickle.dumps(stage)) < 1000
    assert Hasher.hash(stage) == fresh_hash
    assert pickle.loads(pickle.dumps(stage)) == stage


def test_rerun_is_a_cache_hit_and_a_new_config_is_not(photos, tmp_path):
    ds = corpus.image_dataset({k: photos[k] for k in ("astronaut", "coffee")}, tmp_path / "src")
    lite = u2s.preset("lite")
    first = u2s.anonymize(ds, lite)
    files = [f["filename"] for f in first.cache_files]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = u2s.anonymize(ds, lite)  # the same stage objects, models now loaded
    assert [f["filename"] for f in again.cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    blurred = u2s.anonymize(ds, method="blur")
    assert [f["filename"] for f in blurred.cache_files] != files
    other_input = corpus.image_dataset({"chelsea": photos["chelsea"]}, tmp_path / "other")
    assert u2s.anonymize(other_input, lite).cache_files != first.cache_files


NUM_PROC = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import corpus, make_sample, u2s_hf as u2s
    photos = make_sample.sample_photos()
    u2s.inspect({{"image": [photos["astronaut"]]}})  # the parent loads models and runs them before forking
    ds = corpus.image_dataset(photos, {path!r})
    plain = ds.map(u2s.inspect, batched=True, num_proc=2, with_rank=True)
    out = u2s.anonymize(ds, num_proc=2, batch_size=2, method="inpaint")  # OpenCV in the workers too
    print(sum(plain["privacy_flag"]), sorted(out["u2s_status"]))
""")


def test_num_proc_two_after_the_parent_loaded_models_does_not_hang(tmp_path):
    tests = os.path.dirname(__file__)
    code = NUM_PROC.format(tests=tests, path=str(tmp_path / "ds"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.path.join(tests, "..", "dataset_scripts")])}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().endswith(
        "5 ['kept_safe', 'kept_safe', 'redacted', 'redacted', 'redacted', 'redacted', 'redacted']"
    )


def test_in_chunks_isolates_a_bad_row():
    from u2s_hf import runtime

    def run(rows):
        if 3 in rows:
            raise ValueError("row 3 is bad")
        return [r * 10 for r in rows]

    out = runtime.in_chunks([0, 1, 2, 3, 4], 2, run)
    assert {k: v for k, v in out.items() if k != 3} == {0: 0, 1: 10, 2: 20, 4: 40}
    assert isinstance(out[3], ValueError)
