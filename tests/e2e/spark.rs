//! `scripts/spark_embed.py` on a real Spark in local mode: four shard tasks
//! run the binary, `import` builds the index, and it matches `ingest` of the
//! same images. Needs Java and a Python with pyspark and pyarrow (`.ci/run`
//! makes `target/venv-spark`); without them it skips, unless
//! IMGSEARCH_REQUIRE_DATA is set (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    assert_same_records, bin, ingest_digits, json_of, mnist_export, records, run_ok,
    REQUIRE_DATA_ENV,
};

/// The Python to run the driver with: `IMGSEARCH_SPARK_PYTHON`, else
/// `target/venv-spark/bin/python`; `None` (with a message, or a panic where
/// the environment must be complete) when it or Java cannot run Spark.
fn spark_python() -> Option<PathBuf> {
    let python = std::env::var_os("IMGSEARCH_SPARK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-spark/bin/python")
        });
    let works = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    let missing = if !works(Command::new("java").arg("-version")) {
        Some("Java (`java -version`) is not available".to_string())
    } else if !works(Command::new(&python).args(["-c", "import pyspark, pyarrow"])) {
        Some(format!(
            "{} cannot import pyspark and pyarrow (make it with `python3 -m venv target/venv-spark && target/venv-spark/bin/pip install pyspark pyarrow`, or set IMGSEARCH_SPARK_PYTHON)",
            python.display()
        ))
    } else {
        None
    };
    let Some(why) = missing else {
        return Some(python);
    };
    if std::env::var(REQUIRE_DATA_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{why}, and {REQUIRE_DATA_ENV} is set");
    }
    eprintln!("SKIPPED: {why}");
    None
}

#[test]
fn spark_local_embeds_shards_that_import_into_the_index_ingest_makes() {
    let Some(python) = spark_python() else {
        return;
    };
    let Some((tmp, root, reference)) = mnist_export(300) else {
        return;
    };
    ingest_digits(&root, &reference);
    let want = records(&reference);

    let parts = tmp.path().join("parts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spark_embed.py");
    let out = run_ok(
        Command::new(&python)
            .arg(&script)
            .args(["--binary", env!("CARGO_BIN_EXE_imgsearch"), "--input"])
            .arg(&root)
            .arg("--out")
            .arg(&parts)
            .args(["--shards", "4", "--master", "local[2]", "--model", "digits"])
            // Spark's traffic stays on loopback, and no web UI.
            .args(["--conf", "spark.driver.host=127.0.0.1"])
            .args(["--conf", "spark.driver.bindAddress=127.0.0.1"])
            .args(["--conf", "spark.ui.enabled=false"])
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("PYSPARK_PYTHON", &python),
    );
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("the driver prints a summary"),
    )
    .unwrap();
    assert_eq!(summary["rows"], 300, "{summary}");
    assert_eq!(summary["rows_read_back_by_spark"], 300, "{summary}");
    let names: Vec<String> = (0..4)
        .map(|i| format!("part-{i:05}-of-00004.parquet"))
        .collect();
    for name in &names {
        assert!(parts.join(name).is_file(), "{name} is missing");
    }

    // pyarrow, a reader that is not ours, sees the schema and the model.
    let check = "import sys, pyarrow.parquet as pq\n\
                 t = pq.read_table(sys.argv[1])\n\
                 print(t.schema.names, len(t), len(t.column('embedding')[0]), \
                 pq.read_metadata(sys.argv[1]).metadata[b'imgsearch.model'].decode())";
    let out = run_ok(
        Command::new(&python)
            .args(["-c", check])
            .arg(parts.join(&names[2])),
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("['path', 'blake3', 'size', 'mtime', 'width', 'height', 'label', 'embedding', 'recon_error'] 75 16 digits"),
        "{line}"
    );

    let imported = tmp.path().join("imported");
    let report = json_of(&run_ok(
        bin()
            .arg("import")
            .arg(&parts)
            .arg("--index")
            .arg(&imported)
            .arg("--json"),
    ));
    assert_eq!(report["added"], 300, "{report}");
    assert_same_records(&want, &imported);
}
