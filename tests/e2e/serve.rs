//! `imgsearch serve` end to end: the real binary on a loopback port, driven
//! over HTTP through every endpoint, its limits and errors, background
//! ingest, and SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::http::{self, get, post_json, post_multipart, request, Client, Server};
use crate::common::{files_under as files, json_cmd, mnist_index, mnist_split};
use base64::Engine;
use serde_json::{json, Value};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgsearch"))
}

fn label_of(path: &Path) -> String {
    path.parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn upload(
    addr: std::net::SocketAddr,
    endpoint: &str,
    file: &Path,
    fields: &[(&str, &str)],
) -> http::Response {
    let bytes = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("image", Some(&name), &bytes)];
    for (k, v) in fields {
        parts.push((k, None, v.as_bytes()));
    }
    post_multipart(addr, endpoint, &parts)
}

/// An index of 200 MNIST digits served with tight limits, plus 40 unseen
/// training digits to upload; `None` (skip) without data.
struct Served {
    tmp: tempfile::TempDir,
    /// The indexed digits, `<label>/NNNNN.png`.
    digits: PathBuf,
    /// Unseen digits, `<label>/NNNNN.png`.
    train: PathBuf,
    server: Server,
}

fn serve_digits() -> Option<Served> {
    let (tmp, digits, index) = mnist_index(200)?;
    let train = tmp.path().join("train");
    mnist_split(&train, "train", 40).unwrap();
    let server = Server::start(
        &bin(),
        &index,
        &[
            "--allow-root",
            tmp.path().to_str().unwrap(),
            "--max-upload-mb",
            "1",
            "--max-megapixels",
            "0.01",
            "--timeout",
            "2",
        ],
    );
    Some(Served {
        tmp,
        digits,
        train,
        server,
    })
}

#[test]
fn api_answers_queries_classifications_images_and_anomalies() {
    // `_tmp` keeps the folders alive for the whole test.
    let Some(Served {
        tmp: _tmp,
        digits,
        train,
        server,
    }) = serve_digits()
    else {
        return;
    };
    let addr = server.addr;

    // Liveness, page, assets, OpenAPI.
    assert_eq!(get(addr, "/healthz").text(), "ok");
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("/assets/app.js"));
    assert_eq!(get(addr, "/assets/app.js").status, 200);
    assert_eq!(get(addr, "/assets/style.css").status, 200);
    let spec = get(addr, "/api/openapi.json").json();
    assert_eq!(spec["openapi"], "3.0.3");

    // Status.
    let status = get(addr, "/api/status").json();
    assert_eq!(status["status"]["images"], 200);
    assert_eq!(status["graph_loaded"], true);
    assert_eq!(status["status"]["model"]["name"], "digits");

    // Query by upload: unseen digits find neighbours of their own class,
    // and classify gets most of them right.
    let uploads = files(&train);
    let (mut right, mut total) = (0, 0);
    for file in uploads.iter().take(20) {
        let r = upload(addr, "/api/query", file, &[("k", "5")]);
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        let hits = body["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits
            .windows(2)
            .all(|w| w[0]["distance"].as_f64() <= w[1]["distance"].as_f64()));
        assert_eq!(body["query"]["width"], 28);
        let c = upload(addr, "/api/classify", file, &[]).json();
        total += 1;
        if c["prediction"]["label"] == json!(label_of(file)) {
            right += 1;
        }
    }
    assert!(
        right * 10 >= total * 7,
        "classify: {right} of {total} right"
    );

    // Query by id: the image itself first; filters hold.
    let some = files(&digits)[17].clone();
    let id = find_id(addr, &some);
    let r = post_json(addr, "/api/query", &json!({"id": id, "k": 4})).json();
    assert_eq!(r["hits"][0]["id"], id);
    assert_eq!(r["hits"][0]["distance"], 0.0);
    let r = post_json(addr, "/api/query", &json!({"id": id, "k": 6, "label": "3"})).json();
    let hits = r["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|h| h["label"] == "3"), "{r}");
    let under = digits.join("5");
    let r = post_json(
        addr,
        "/api/query",
        &json!({"id": id, "k": 3, "under": under}),
    )
    .json();
    assert!(r["hits"].as_array().unwrap().iter().all(|h| h["path"]
        .as_str()
        .unwrap()
        .starts_with(under.to_str().unwrap())));
    // Classify by id: it does not vote for itself.
    let c = post_json(addr, "/api/classify", &json!({"id": id})).json();
    let voters = c["prediction"]["voters"].as_array().unwrap();
    assert_eq!(voters.len(), 7);
    assert!(voters.iter().all(|v| v["id"] != id));

    // Image record, thumbnail, file.
    let meta = get(addr, &format!("/api/images/{id}")).json();
    assert_eq!(meta["path"], some.to_str().unwrap());
    assert_eq!(meta["label"], label_of(&some));
    assert_eq!(meta["width"], 28);
    let thumb = get(addr, &format!("/api/images/{id}/thumbnail"));
    assert_eq!(thumb.header("content-type"), Some("image/png"));
    let decoded = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (28, 28));
    let file = get(addr, &format!("/api/images/{id}/file"));
    assert_eq!(file.status, 200);
    assert_eq!(file.body, std::fs::read(&some).unwrap());

    // Anomalies, highest first.
    let a = get(addr, "/api/anomalies?top=5").json();
    let scores: Vec<f64> = a["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 5);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(a["scored"], 200);
    let a = get(addr, "/api/anomalies?top=3&label=4").json();
    assert!(a["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["label"] == "4"));

    // The map: every image placed (a sample when `max` says so).
    let m = get(addr, "/api/map?method=neighbours").json();
    assert_eq!(
        (&m["method"], &m["images"]),
        (&"neighbours".into(), &200.into())
    );
    assert_eq!(m["points"].as_array().unwrap().len(), 200);
    assert_eq!(m["label_colours"].as_object().unwrap().len(), 10);
    let m = get(addr, "/api/map?max=50&label=4").json();
    let points = m["points"].as_array().unwrap();
    assert_eq!(points.len(), 50.min(m["images"].as_u64().unwrap() as usize));
    assert!(points.iter().all(|p| p["label"] == "4"));
    assert_eq!(get(addr, "/api/map?label=none-such").json()["images"], 0);
    assert_eq!(get(addr, "/api/map?method=tsne").status, 400);

    // Clusters, each with its decoded centroid as a PNG.
    let c = get(addr, "/api/clusters?k=4&members=3").json();
    assert_eq!((&c["k"], &c["images"]), (&4.into(), &200.into()));
    let clusters = c["clusters"].as_array().unwrap();
    let sizes: u64 = clusters.iter().map(|c| c["size"].as_u64().unwrap()).sum();
    assert_eq!(sizes, 200);
    for cluster in clusters {
        assert!(cluster["members"].as_array().unwrap().len() <= 3);
        let url = cluster["centroid_image"].as_str().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(url.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        let centroid = image::load_from_memory(&png).unwrap();
        assert_eq!((centroid.width(), centroid.height()), (28, 28));
    }
    assert!(c["purity"].as_f64().unwrap() > 0.3);
    for bad in [
        "/api/clusters?k=0",
        "/api/clusters?k=201",
        "/api/clusters?k=x",
    ] {
        let r = get(addr, bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn background_ingest_makes_new_images_searchable_while_queries_go_on() {
    let Some(Served {
        tmp,
        digits,
        server,
        ..
    }) = serve_digits()
    else {
        return;
    };
    let addr = server.addr;
    let some = files(&digits)[17].clone();
    let id = find_id(addr, &some);

    // Background ingest: new images (with a byte copy of an indexed one)
    // become searchable, and searches keep answering while it runs.
    let new = tmp.path().join("new");
    mnist_split(&new.join("more"), "train", 300).unwrap();
    std::fs::copy(&some, new.join("copy.png")).unwrap();
    let r = post_json(addr, "/api/ingest", &json!({"dir": new}));
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json()["job"]["id"].as_u64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/jobs/{job}").as_str())
    );
    let mut during = 0;
    loop {
        let q = post_json(addr, "/api/query", &json!({"id": id, "k": 3}));
        assert_eq!(q.status, 200);
        during += 1;
        let state = get(addr, &format!("/api/jobs/{job}")).json()["job"]["state"].clone();
        if state != "queued" && state != "running" {
            break;
        }
    }
    let done = http::wait_for_job(addr, job, Duration::from_secs(120));
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["added"], 301);
    assert_eq!(done["scanned"], 301);
    assert_eq!(done["total"], 301);
    assert!(during >= 1);
    assert_eq!(get(addr, "/api/status").json()["status"]["images"], 501);
    let jobs = get(addr, "/api/jobs").json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    // A new image finds itself.
    let fresh = files(&new.join("more"))[5].clone();
    let r = upload(addr, "/api/query", &fresh, &[("k", "1")]).json();
    assert_eq!(r["hits"][0]["path"], fresh.to_str().unwrap());
    assert!(r["hits"][0]["distance"].as_f64().unwrap() < 1e-3);
    // The copy and its original form an identical group.
    let d = get(addr, "/api/duplicates?threshold=0.0001").json();
    let copy = new.join("copy.png");
    let group = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["path"] == copy.to_str().unwrap())
        })
        .unwrap_or_else(|| panic!("no group holds the copy: {d}"));
    assert_eq!(group["kind"], "identical");
    assert!(group["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == id));

    let log = server.log();
    assert!(log.contains("ingest finished"), "{log}");
}

#[test]
fn api_refuses_bad_requests_with_the_right_status_and_logs_attacks() {
    let Some(Served {
        tmp,
        digits,
        server,
        ..
    }) = serve_digits()
    else {
        return;
    };
    let addr = server.addr;
    let some = files(&digits)[17].clone();
    // A folder inside the allowed root, for the `..` escape below.
    std::fs::create_dir_all(tmp.path().join("new")).unwrap();

    let expect = |r: http::Response, status: u16, says: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert!(
            r.error().contains(says),
            "`{}` should say `{says}`",
            r.error()
        );
    };
    // Unknown ids: 404.
    expect(
        get(addr, "/api/images/999999"),
        404,
        "no image with id 999999",
    );
    expect(get(addr, "/api/images/999999/thumbnail"), 404, "no image");
    expect(get(addr, "/api/images/999999/file"), 404, "no image");
    expect(
        post_json(addr, "/api/query", &json!({"id": 999999})),
        404,
        "no image",
    );
    expect(get(addr, "/api/jobs/77"), 404, "no job 77");
    expect(get(addr, "/api/jobs/abc"), 400, "`abc` is not a job id");
    expect(get(addr, "/api/nothing"), 404, "no such endpoint");
    // Path traversal: refused, never served, and logged.
    let r = request(addr, "GET", "/../../../../etc/passwd", &[], &[]);
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("root:"));
    expect(
        get(addr, "/api/images/..%2f..%2fetc%2fpasswd/file"),
        400,
        "not an image id",
    );
    expect(get(addr, "/assets/..%2f..%2fCargo.toml"), 404, "no asset");
    expect(
        post_json(
            addr,
            "/api/ingest",
            &json!({"dir": tmp.path().join("new/../../..")}),
        ),
        403,
        "not under an allowed root",
    );
    expect(
        post_json(addr, "/api/ingest", &json!({"dir": "/etc"})),
        403,
        "not under an allowed root",
    );
    expect(
        post_json(
            addr,
            "/api/ingest",
            &json!({"dir": tmp.path().join("missing")}),
        ),
        404,
        "cannot ingest",
    );
    expect(
        post_json(addr, "/api/ingest", &json!({"dir": some})),
        400,
        "not a folder",
    );
    let r = post_json(addr, "/api/ingest", &json!({"folder": "x"}));
    assert_eq!(r.status, 422, "{}", r.text());
    // Malformed requests: 400.
    let content_type = format!("multipart/form-data; boundary={}", http::BOUNDARY);
    expect(
        request(
            addr,
            "POST",
            "/api/query",
            &[("Content-Type", &content_type)],
            b"--imgsearch-test-boundary\r\nContent-Disp",
        ),
        400,
        "malformed upload",
    );
    expect(
        post_multipart(addr, "/api/query", &[("k", None, b"3")]),
        400,
        "nothing to search for",
    );
    expect(
        upload(addr, "/api/query", &some, &[("k", "0")]),
        400,
        "k must be",
    );
    expect(
        upload(addr, "/api/query", &some, &[("k", "many")]),
        400,
        "is not a count",
    );
    expect(
        upload(addr, "/api/query", &some, &[("id", "3")]),
        400,
        "not both",
    );
    expect(
        post_multipart(addr, "/api/query", &[("picture", Some("a.png"), b"x")]),
        400,
        "unknown form field",
    );
    expect(
        request(
            addr,
            "POST",
            "/api/query",
            &[("Content-Type", "application/json")],
            b"{\"id\": ",
        ),
        400,
        "",
    );
    expect(
        request(
            addr,
            "POST",
            "/api/query",
            &[("Content-Type", "text/plain")],
            b"hi",
        ),
        415,
        "unsupported content type",
    );
    expect(get(addr, "/api/anomalies?top=lots"), 400, "");
    expect(get(addr, "/api/duplicates?threshold=-1"), 400, "threshold");
    // Not an image: 422. Too many pixels (limit 0.01 MP): 413.
    let junk = tmp.path().join("junk.png");
    std::fs::write(&junk, b"this is not a png").unwrap();
    expect(
        upload(addr, "/api/query", &junk, &[]),
        422,
        "not a decodable image",
    );
    let big = tmp.path().join("big.png");
    image::GrayImage::new(200, 100).save(&big).unwrap();
    expect(
        upload(addr, "/api/query", &big, &[]),
        413,
        "above the limit",
    );
    // Body over --max-upload-mb 1: 413.
    let blob = vec![7u8; 1_500_000];
    expect(
        post_multipart(addr, "/api/query", &[("image", Some("huge.png"), &blob)]),
        413,
        "too large",
    );
    // A body that never finishes: 408 after --timeout 2.
    let mut slow = Client::connect(addr).unwrap();
    slow.write_raw(format!("POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 5000\r\n\r\n--{}\r\n", http::BOUNDARY).as_bytes()).unwrap();
    let r = slow.read_response().unwrap();
    assert_eq!(r.status, 408);
    // Every error answer is JSON, even those made outside the handlers.
    assert!(!r.error().is_empty(), "{}", r.text());
    // A file changed on disk since indexing: 409; gone: 410.
    let victim = files(&digits)[3].clone();
    let vid = find_id(addr, &victim);
    std::fs::write(&victim, b"changed").unwrap();
    expect(
        get(addr, &format!("/api/images/{vid}/file")),
        409,
        "changed on disk",
    );
    std::fs::remove_file(&victim).unwrap();
    expect(
        get(addr, &format!("/api/images/{vid}/file")),
        410,
        "is not on this machine",
    );
    // Its thumbnail is the decoder's image of its stored latent, marked.
    let r = get(addr, &format!("/api/images/{vid}/thumbnail"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-imgsearch-reconstructed"), Some("1"));
    let drawn = image::load_from_memory(&r.body).unwrap();
    assert_eq!((drawn.width(), drawn.height()), (28, 28));
    // An indexed file replaced by a FIFO: refused at once, not waited on.
    let piped = files(&digits)[4].clone();
    let pid = find_id(addr, &piped);
    std::fs::remove_file(&piped).unwrap();
    let c = std::ffi::CString::new(piped.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    expect(
        get(addr, &format!("/api/images/{pid}/file")),
        410,
        "not a regular file (a FIFO)",
    );
    // An indexed file swapped for a link to a file outside the index's
    // folders: not served, whatever it points to.
    let swapped = files(&digits)[5].clone();
    let sid = find_id(addr, &swapped);
    let secret = tmp.path().join("secret.png");
    std::fs::copy(&swapped, &secret).unwrap();
    std::fs::remove_file(&swapped).unwrap();
    std::os::unix::fs::symlink(&secret, &swapped).unwrap();
    expect(
        get(addr, &format!("/api/images/{sid}/file")),
        403,
        "outside the folders this index holds",
    );

    let log = server.log();
    assert!(log.contains("refused a path traversal attempt"), "{log}");
    assert!(
        log.contains("refused an ingest outside the allowed roots"),
        "{log}"
    );
}

/// The id of an indexed file, through the API (a query by its own upload).
fn find_id(addr: std::net::SocketAddr, file: &Path) -> u64 {
    let r = upload(addr, "/api/query", file, &[("k", "5")]).json();
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == file.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} not found: {r}", file.display()))["id"]
        .as_u64()
        .unwrap()
}

#[test]
fn without_allow_root_ingest_is_off_and_classify_needs_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("idx");
    // A new, empty index: created by serve with the asked model.
    let server = Server::start(&bin(), &index, &["--model", "digits"]);
    let addr = server.addr;
    assert_eq!(get(addr, "/api/status").json()["status"]["images"], 0);
    let r = post_json(addr, "/api/ingest", &json!({"dir": tmp.path()}));
    assert_eq!(r.status, 403);
    assert!(r.error().contains("--allow-root"));
    let img = tmp.path().join("a.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * y) % 256) as u8]))
        .save(&img)
        .unwrap();
    let r = upload(addr, "/api/query", &img, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["hits"], json!([]));
    let r = upload(addr, "/api/classify", &img, &[]);
    assert_eq!(r.status, 409);
    assert!(r.error().contains("no labelled images"));
    assert_eq!(get(addr, "/api/anomalies").json()["images"], json!([]));
}

#[test]
fn sigterm_stops_ingest_cleanly_and_a_rerun_completes_it() {
    let Some((tmp, _, index)) = mnist_index(100) else {
        return;
    };
    let big = tmp.path().join("big");
    mnist_split(&big, "train", 6000).unwrap();
    let mut server = Server::start(
        &bin(),
        &index,
        &["--allow-root", tmp.path().to_str().unwrap()],
    );
    let addr = server.addr;
    let job = post_json(addr, "/api/ingest", &json!({"dir": big})).json()["job"]["id"]
        .as_u64()
        .unwrap();
    // A second job waits behind it; cancelling it while queued means it
    // never runs.
    let second = post_json(addr, "/api/ingest", &json!({"dir": big})).json()["job"]["id"]
        .as_u64()
        .unwrap();
    let r = request(addr, "DELETE", &format!("/api/jobs/{second}"), &[], &[]);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["job"]["state"], "cancelled");
    assert_eq!(
        request(addr, "DELETE", "/api/jobs/99", &[], &[]).status,
        404
    );
    assert_eq!(get(addr, "/api/status").json()["jobs"]["cancelled"], 1);
    // Wait until some batches have landed, then stop the server.
    let start = std::time::Instant::now();
    loop {
        let view: Value = get(addr, &format!("/api/jobs/{job}")).json()["job"].clone();
        if view["scanned"].as_u64().unwrap_or(0) >= 512 || view["state"] == "done" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{view}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.terminate(Duration::from_secs(60)), Some(0));
    let log = server.log();
    assert!(
        log.contains("SIGTERM received") && log.contains("index flushed"),
        "{log}"
    );

    // Whatever landed is consistent: records, flat rows and graph agree.
    let status = json_cmd("status", &index, &[]);
    let images = status["images"].as_u64().unwrap();
    // Stopped partway (6,000 files take seconds; the signal came after 512).
    assert!(images > 100 && images < 6100, "{status}");
    assert_eq!(status["flat_rows"].as_u64(), Some(images));
    assert_eq!(status["graph_points"].as_u64(), Some(images));
    // Re-running the same ingest finishes the job.
    let report = json_cmd("ingest", &index, &[big.as_os_str()]);
    assert_eq!(
        report["added"].as_u64().unwrap() + report["unchanged"].as_u64().unwrap(),
        6000,
        "{report}"
    );
    assert_eq!(json_cmd("status", &index, &[])["images"], 6100);
}

/// 1,500 connections that send nothing (or half a header) to a server
/// started with the common default of 1,024 open files: `/healthz` still
/// answers (the server raises its limit), and the silent connections are
/// closed once idle for `--idle-timeout`.
#[test]
fn idle_connections_neither_take_the_server_down_nor_stay_open() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..3u32 {
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * i + y) as u8]))
            .save(root.join(format!("{i}.png")))
            .unwrap();
    }
    let index = dir.path().join("idx");
    json_cmd(
        "ingest",
        &index,
        &[root.as_os_str(), "--model".as_ref(), "digits".as_ref()],
    );
    // The soft limit most machines start processes with.
    let wrapper = dir.path().join("imgsearch-1024");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -Sn 1024\nexec '{}' \"$@\"\n",
            bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let server = Server::start(&wrapper, &index, &["--timeout", "1", "--idle-timeout", "6"]);
    let addr = server.addr;
    let mut idle: Vec<std::net::TcpStream> = (0..1500)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x").unwrap();
            }
            c
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(get(addr, "/healthz").text(), "ok");
    assert!(started.elapsed() < Duration::from_secs(5));
    // After the idle timeout (6 s, the least allowed with --timeout 1) the
    // silent connections are closed by the server: reads see the end.
    std::thread::sleep(Duration::from_secs(8));
    let mut closed = 0;
    for c in idle.iter_mut().step_by(50) {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1024];
        // Whatever the server said last, the connection must end; a read
        // that times out instead means it is still open.
        loop {
            match c.read(&mut buf) {
                Ok(0) => break closed += 1,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => break closed += 1,
            }
        }
    }
    assert_eq!(closed, 30, "silent connections were left open");
    assert_eq!(get(addr, "/healthz").text(), "ok");
}

/// One sample of Prometheus's text format: name, labels, value.
type Sample = (String, std::collections::BTreeMap<String, String>, f64);

/// Parses the text exposition format strictly enough to catch what a
/// scraper would reject: `# HELP`/`# TYPE` lines, a declared type before
/// each family's samples, metric and label names, quoted and escaped label
/// values, and float values.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types = std::collections::BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name, tail) = (words.next().unwrap(), words.next().unwrap(), words.next());
            assert!(name_ok(name), "{line}");
            if kind == "TYPE" {
                let t = tail.unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), t.to_string()).is_none(),
                    "twice: {line}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, std::collections::BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = std::collections::BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(name_ok(&key), "label name in {line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("{line}")) {
                            '"' => break,
                            '\\' => value.push(match chars.next().unwrap() {
                                'n' => '\n',
                                c => c,
                            }),
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no TYPE before {line}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn metrics_count_requests_per_route_in_prometheus_text() {
    let Some(Served {
        tmp: _tmp,
        digits,
        server,
        ..
    }) = serve_digits()
    else {
        return;
    };
    let addr = server.addr;
    for _ in 0..3 {
        assert_eq!(get(addr, "/api/status").status, 200);
    }
    let id = find_id(addr, &files(&digits)[3]);
    for _ in 0..2 {
        assert_eq!(
            post_json(addr, "/api/query", &json!({"id": id, "k": 3})).status,
            200
        );
    }
    assert_eq!(get(addr, "/api/images/987654").status, 404);
    assert_eq!(get(addr, "/no/such/page").status, 404);

    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&response.text());
    let value = |name: &str, want: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && labels.len() == want.len()
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    };
    let requests = |method: &str, route: &str, status: &str| {
        value(
            "imgsearch_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("GET", "/api/status", "200"), Some(3.0));
    // find_id's upload is the third query.
    assert_eq!(requests("POST", "/api/query", "200"), Some(3.0));
    // Routes are counted by pattern, never by the id asked for.
    assert_eq!(requests("GET", "/api/images/{id}", "404"), Some(1.0));
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0));
    assert!(samples
        .iter()
        .all(|(_, labels, _)| !labels.values().any(|v| v.contains("987654"))));
    // The histogram is cumulative and ends at the count.
    let route = [("method", "GET"), ("route", "/api/status")];
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "imgsearch_http_request_duration_seconds_bucket" && l["route"] == "/api/status"
        })
        .map(|s| s.2)
        .collect();
    assert!(
        buckets.len() > 5 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{buckets:?}"
    );
    assert_eq!(*buckets.last().unwrap(), 3.0);
    assert_eq!(
        value("imgsearch_http_request_duration_seconds_count", &route),
        Some(3.0)
    );
    assert!(value("imgsearch_http_request_duration_seconds_sum", &route).unwrap() > 0.0);
    assert_eq!(value("imgsearch_index_images", &[]), Some(200.0));
    assert_eq!(value("imgsearch_index_graph_points", &[]), Some(200.0));
    assert!(value("imgsearch_index_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        value("imgsearch_ingest_jobs", &[("state", "running")]),
        Some(0.0)
    );
    // The scrape itself is counted once it is answered.
    let again = parse_prometheus(&get(addr, "/metrics").text());
    assert!(again
        .iter()
        .any(|(n, l, v)| n == "imgsearch_http_requests_total"
            && l["route"] == "/metrics"
            && *v == 1.0));
}
