#!/usr/bin/env python3
"""Embed a huge image collection on many machines with Apache Spark.

Spark only schedules: the job is N independent tasks, one per shard, and
task I runs the imgsearch binary itself, `imgsearch embed --shard I/N`,
which writes OUT/part-IIIII-of-NNNNN.parquet (clip-retrieval's distributed
inference has the same shape). The models are compiled into the binary, so
an executor needs nothing else: the driver ships the binary with
SparkContext.addFile. A task that fails is retried by Spark and rewrites
only its own file; a shard already complete is skipped, so re-running the
whole job resumes it. Building the index is a separate step:

    imgsearch import OUT --index INDEX

INPUT and OUT must be folders that every executor reads and writes under the
same path: a shared filesystem (NFS, CephFS, Lustre) or a mounted bucket
(s3fs, gcsfuse, blobfuse). Every task lists INPUT the same way and takes
every N-th file of the sorted list, so the shards are disjoint and together
cover the collection without any coordination.

On this machine (Spark in local mode, two task slots):

    python scripts/spark_embed.py --binary target/release/imgsearch \\
        --input ~/photos --out /tmp/parts --shards 8

On a cluster (spark-submit's --master wins over the default):

    spark-submit --master spark://head:7077 --files target/release/imgsearch \\
        scripts/spark_embed.py --binary target/release/imgsearch \\
        --input /mnt/shared/photos --out /mnt/shared/parts --shards 512

Each task runs the binary with RAYON_NUM_THREADS set to its cores
(spark.task.cpus), so the tasks on one executor share its cores instead of
each taking them all. Local mode does not retry failed tasks unless asked
(`--master 'local[2,4]'`: 2 slots, up to 4 attempts); clusters retry by
default (spark.task.maxFailures).
"""

import argparse
import json
import os
import subprocess
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", required=True, help="the imgsearch binary to ship to executors")
    p.add_argument("--input", required=True, nargs="+", help="folders (or files) to embed, readable by every executor")
    p.add_argument("--out", required=True, help="folder for the Parquet shards, writable by every executor")
    p.add_argument("--shards", type=int, required=True, help="number of shards (tasks)")
    p.add_argument("--master", default=None, help="Spark master (default: spark-submit's, else local[2])")
    p.add_argument("--model", default=None, help="imgsearch model name (default: the binary's default, photos)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting, as spark-submit's --conf (repeatable)")
    return p.parse_args(argv)


def shard_task(binary_name, inputs, out, shards, model):
    """The function each task runs: one `imgsearch embed --shard I/N`."""

    def run(i):
        from pyspark import SparkFiles, TaskContext

        binary = SparkFiles.get(binary_name)
        if not os.access(binary, os.X_OK):
            os.chmod(binary, 0o755)
        cores = TaskContext.get().cpus() or 1
        env = dict(os.environ, RAYON_NUM_THREADS=str(cores))
        cmd = [binary, "embed", "--json", "--out", out, "--shard", f"{i}/{shards}"]
        if model:
            cmd += ["--model", model]
        proc = subprocess.run(cmd + inputs, env=env, capture_output=True, text=True)
        # 0: every file embedded; 3: some files failed (listed in
        # OUT/errors/part-IIIII.jsonl), the shard is still complete.
        if proc.returncode not in (0, 3):
            # Spark retries the task; the shard's file is rewritten whole.
            raise RuntimeError(f"shard {i}/{shards} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(proc.stdout)

    return run


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    # A master set by spark-submit is already in the configuration.
    master = args.master or SparkConf().get("spark.master", "local[2]")
    builder = SparkSession.builder.appName("imgsearch-embed").master(master)
    for pair in args.conf:
        key, _, value = pair.partition("=")
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    binary = os.path.abspath(args.binary)
    name = os.path.basename(binary)
    # spark-submit --files may have shipped it already.
    shipped = [os.path.basename(f) for f in sc.getConf().get("spark.files", "").split(",") if f]
    if name not in shipped:
        sc.addFile(binary)
    inputs = [os.path.abspath(p) for p in args.input]
    out = os.path.abspath(args.out)
    run = shard_task(name, inputs, out, args.shards, args.model)
    reports = sc.parallelize(range(args.shards), args.shards).map(run).collect()

    rows = sum(r["rows"] for r in reports)
    failed = sum(r["failed"] for r in reports)
    skipped = sum(1 for r in reports if r["skipped"])
    # Spark reads the shards as they are: the count is a check on the files.
    counted = spark.read.parquet(os.path.join(out, "part-*.parquet")).count()
    summary = {
        "shards": args.shards,
        "rows": rows,
        "failed": failed,
        "shards_already_complete": skipped,
        "rows_read_back_by_spark": counted,
        "out": out,
    }
    print(json.dumps(summary))
    spark.stop()
    return 0 if counted == rows else 1


if __name__ == "__main__":
    sys.exit(main())
