"""A workdir in Cloud Storage, as a TPU pod uses: train, resume and sample on gs:// paths.

The bucket is a local Cloud Storage emulator (tests/gcs_emulator.py); abcjax reaches it through the
same client libraries it uses on a TPU VM (gcsfs, Orbax's tensorstore, tensorboardX's
google-cloud-storage), pointed at the emulator by their standard environment variables.
"""

import json
import socket
import subprocess
import sys
import time

import pytest
from gcsfs.core import GCSFileSystem  # the plain client: the emulator has no bucket-layout API for the extended one
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from abcjax import storage
from abcjax.errors import AbcjaxError
from conftest import REPO, TINY_CONFIG, free_port, run_abcjax

pytestmark = pytest.mark.xdist_group("test_cloud_storage")  # one worker: its module fixture is built once

BUCKET = "abcjax-test"


@pytest.fixture(scope="module")
def emulator():
    """(URL, environment variables for abcjax) of a Cloud Storage emulator holding an empty bucket BUCKET."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port), BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, server)
        url = f"http://127.0.0.1:{port}"
        variables = {
            "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
            "TENSORSTORE_GCS_HTTP_URL": url,  # Orbax's array writer
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore asks for no real credentials
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # the emulator has no bucket-layout (gRPC) API
        }
        yield url, variables
    finally:
        server.kill()
        server.wait()


def _wait_for_port(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "the Cloud Storage emulator exited"
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError("the Cloud Storage emulator did not start in 30 s")


def test_train_resume_and_sample_with_a_gs_workdir(emulator, tmp_path):
    url, variables = emulator
    bucket = GCSFileSystem(endpoint_url=url, token="anon")
    workdir = f"gs://{BUCKET}/runs/tiny"

    first = run_abcjax("train", "--config", str(TINY_CONFIG), "--workdir", workdir, variables=variables)
    assert first.returncode == 0, first.stderr
    resumed = run_abcjax(
        "train", "--config", str(TINY_CONFIG), "--workdir", workdir, "--config.train.steps=6", variables=variables
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint of step 4" in resumed.stdout

    run = f"{BUCKET}/runs/tiny"
    saved = {path.rsplit("/", 1)[-1] for path in bucket.ls(f"{run}/checkpoints")}
    assert saved == {"2", "4", "6"}
    lines = [json.loads(line) for line in bucket.cat(f"{run}/metrics.jsonl").decode().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6]  # rewritten whole on resume, each step once

    local_copy = tmp_path / "tiny"
    bucket.get(f"{run}/", str(local_copy), recursive=True)
    events = EventAccumulator(str(local_copy))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4, 6]

    tunebook = f"gs://{BUCKET}/out/tunes.abc"
    free = ("--num_tunes", "3", "--no-constrain")  # the storage is the point here, not the sampler
    sampled = run_abcjax("sample", "--workdir", workdir, *free, "--out", tunebook, variables=variables)
    assert sampled.returncode == 0, sampled.stderr
    from_local_copy = tmp_path / "tunes.abc"
    local = run_abcjax(
        "sample", "--workdir", str(local_copy), *free, "--out", str(from_local_copy), variables=variables
    )
    assert local.returncode == 0, local.stderr
    tunes = bucket.cat(f"{BUCKET}/out/tunes.abc").decode()
    assert [line for line in tunes.splitlines() if line.startswith("X:")] == ["X:1", "X:2", "X:3"]
    assert tunes.split("\n\n", 1)[1] == from_local_copy.read_text().split("\n\n", 1)[1]  # past the header


def test_a_missing_bucket_is_one_line_and_writes_nothing(emulator):
    _, variables = emulator
    result = run_abcjax(
        "train", "--config", str(TINY_CONFIG), "--workdir", "gs://no-such-bucket/run", variables=variables
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "abcjax: error: bucket gs://no-such-bucket does not exist: create it (gcloud storage buckets create) first"
    ]


@pytest.mark.parametrize(
    "url, message",
    [
        ("s3://bucket/run", "s3:// is not supported"),
        ("gs://", "names no bucket"),
    ],
)
def test_unusable_urls_are_refused_before_any_work(url, message):
    with pytest.raises(AbcjaxError, match=message):
        storage.check_reachable(storage.as_path(url), "--workdir")
