//! `export` end to end: the three formats agree with each other and with
//! the index, and bad requests fail clearly.

use std::path::Path;

use serde_json::Value;

use crate::common::{bin, json_cmd, mnist_export, run, run_ok};

const N: usize = 40;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn jsonl_csv_and_npy_hold_the_same_latents() {
    let Some((tmp, root, index)) = mnist_export(N) else {
        return;
    };
    json_cmd(
        "ingest",
        &index,
        &[root.as_os_str(), "--model".as_ref(), "digits".as_ref()],
    );
    let dir = tmp.path();

    // jsonl on standard output: one object per image, labelled by folder.
    let out = run_ok(bin().args(["export", "--index"]).arg(&index));
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), N);
    for r in &rows {
        let path = Path::new(r["path"].as_str().unwrap());
        assert!(path.is_file());
        let folder = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(r["label"], folder);
        assert_eq!(r["latent"].as_array().unwrap().len(), 16);
        assert!(r["recon_error"].as_f64().unwrap() > 0.0);
    }
    let latent = |i: usize| -> Vec<f32> {
        rows[i]["latent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };

    // csv: header, then the same rows in the same order.
    let csv = dir.join("latents.csv");
    run_ok(
        bin()
            .args(["export", "--format", "csv", "-o"])
            .arg(&csv)
            .arg("--index")
            .arg(&index),
    );
    let csv = lines(&csv);
    assert_eq!(csv.len(), N + 1);
    assert!(csv[0].starts_with("id,path,label,recon_error,z0,z1"));
    let fields: Vec<&str> = csv[1].split(',').collect();
    assert_eq!(fields.len(), 4 + 16);
    assert_eq!(fields[1], rows[0]["path"]);
    let from_csv: Vec<f32> = fields[4..].iter().map(|f| f.parse().unwrap()).collect();
    assert_eq!(from_csv, latent(0));

    // npy: a float32 (N, 16) matrix and its row names beside it.
    let npy = dir.join("latents.npy");
    let report: Value = serde_json::from_slice(
        &run_ok(
            bin()
                .args(["export", "--format", "npy", "--json", "-o"])
                .arg(&npy)
                .arg("--index")
                .arg(&index),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(report["images"], N);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains(&format!("'shape': ({N}, 16)")),
        "{header}"
    );
    let data = &bytes[10 + header_len..];
    assert_eq!(data.len(), N * 16 * 4);
    let row = |i: usize| -> Vec<f32> {
        data[i * 64..(i + 1) * 64]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    assert_eq!(row(N - 1), latent(N - 1));
    let names = lines(&dir.join("latents.rows.csv"));
    assert_eq!(names.len(), N + 1);
    assert!(names[N].starts_with(&format!("{},", N - 1)));
    assert!(names[N].contains(rows[N - 1]["path"].as_str().unwrap()));
    assert!(!dir.join("latents.npy.tmp").exists());

    // Filters.
    let out = run_ok(
        bin()
            .args(["export", "--label", "1", "--index"])
            .arg(&index),
    );
    let ones = String::from_utf8(out.stdout).unwrap();
    let expected = rows.iter().filter(|r| r["label"] == "1").count();
    assert!(expected > 0);
    assert_eq!(ones.lines().count(), expected);
}

#[test]
fn bad_requests_fail_clearly() {
    let Some((tmp, root, index)) = mnist_export(5) else {
        return;
    };
    json_cmd(
        "ingest",
        &index,
        &[root.as_os_str(), "--model".as_ref(), "digits".as_ref()],
    );
    let r = run(bin()
        .args(["export", "--format", "npy", "--index"])
        .arg(&index));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--out FILE.npy"));
    let target = tmp.path().join("no/such/folder/x.csv");
    let r = run(bin()
        .args(["export", "--format", "csv", "-o"])
        .arg(&target)
        .arg("--index")
        .arg(&index));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no/such/folder/x.csv"));
    let r = run(bin()
        .args(["export", "--index"])
        .arg(tmp.path().join("nothing")));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no index at"));
}
