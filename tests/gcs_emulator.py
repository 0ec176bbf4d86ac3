"""A local Cloud Storage server for the gs:// tests: gcp-storage-emulator, made to send generations.

Real Cloud Storage returns an object's generation in the `x-goog-generation` header of every
download; Orbax's checkpoint writer (tensorstore) reads it back when it updates a file in place, and
fails ("Malformed StorageGeneration") without it. The emulator leaves it out, so this script adds it
before starting the emulator.

python tests/gcs_emulator.py PORT BUCKET   (runs until killed)
"""

import sys

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    try:
        resource = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = resource["generation"]
        response["x-goog-metageneration"] = resource["metageneration"]
    except NotFound:
        pass  # the emulator's own handler answers 404
    return _download(request, response, storage, *args, **kwargs)


objects.download = _download_with_generation  # before the server module builds its routes

from gcp_storage_emulator.server import create_server  # noqa: E402

if __name__ == "__main__":
    port, bucket = int(sys.argv[1]), sys.argv[2]
    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()
