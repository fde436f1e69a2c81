"""Checkpoint upload and download through the bucket store, against moto's S3 server on loopback.

One fake checkpoint (random weights of --mb MiB plus a config and a tokenizer
file) is uploaded with `BucketStore.store_checkpoint` (every file hashed, then
sent, manifest last) and fetched into a second, empty cache with
`checkpoint_dir` (downloaded, hashed, renamed into place), --repeats times. The
figures are end to end through Varro's store, hashing included; moto keeps the
objects in memory in this process, so on a 2-core machine the server and the
client share the CPUs, and a real S3 endpoint over a network is another matter.

    .venv/bin/python bench/bench_bucket.py [--mb 256] [--repeats 3] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=None, help="parts in flight (default: the store's)")
    args = parser.parse_args()

    from s3_fixtures import MotoServer

    from varro.checkpoints import checkpoint_sha256
    from varro.config import load_config
    from varro.stores import open_store

    server = MotoServer()
    os.environ.update(server.env())
    server.client().create_bucket(Bucket="bench")
    up, down = [], []
    try:
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)

                url = f"s3://bench/r{repeat}"
                trainer, reader = (
                    open_store(load_config(overrides={"data_dir": str(root / n), "artifacts": {"url": url}}))
                    for n in ("trainer", "reader")
                )
                if args.concurrency is not None:
                    from boto3.s3.transfer import TransferConfig

                    for side in (trainer, reader):
                        side.transfer = TransferConfig(
                            use_threads=args.concurrency > 1,
                            max_concurrency=args.concurrency,
                            multipart_threshold=64 << 20,
                            multipart_chunksize=64 << 20,
                        )
                staging = root / "staging"
                staging.mkdir()
                with open(staging / "model.safetensors", "wb") as fh:
                    for _ in range(args.mb):
                        fh.write(os.urandom(1 << 20))
                (staging / "config.json").write_text('{"model_type": "qwen3"}\n')
                (staging / "tokenizer.json").write_text("{}\n")
                sha = checkpoint_sha256(staging)
                trainer.cache.checkpoints.mkdir(parents=True)
                os.rename(staging, trainer.cache.path(sha))
                from events.schema import CheckpointRef

                started = time.perf_counter()
                trainer.store_checkpoint(CheckpointRef(sha256=sha, base_model="bench"))
                up.append(time.perf_counter() - started)
                started = time.perf_counter()
                path = reader.checkpoint_dir(sha)
                down.append(time.perf_counter() - started)
                assert path is not None and checkpoint_sha256(path) == sha
                reader.release_checkpoint(sha)
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "mib": args.mb,
                "concurrency": args.concurrency or "store default (4)",
                "upload_s": [round(t, 2) for t in up],
                "download_s": [round(t, 2) for t in down],
                "upload_mib_s_median": round(args.mb / statistics.median(up), 1),
                "download_mib_s_median": round(args.mb / statistics.median(down), 1),
                "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
