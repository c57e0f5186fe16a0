//! The web page in a real browser: headless Chromium, driven over the W3C
//! WebDriver protocol by chromedriver, loads the page from a real
//! `imgsearch serve`, uploads an image, sees the neighbours' thumbnails and
//! the predicted label, clicks a result to search from it, opens the
//! anomalies tab, clicks an image on the map to search from it, and opens
//! the clusters tab. Screenshots are saved as test artifacts.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Where they are absent the test is skipped with a message, unless
//! `IMGSEARCH_REQUIRE_BROWSER=1` (set by `.ci/run`) makes that a failure.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::{self, Server};
use crate::common::{files_under, mnist_index, mnist_split};
use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start(program: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        loop {
            if let Ok(mut c) = http::Client::connect(addr) {
                if let Ok(r) = c.send("GET", "/status", &[], &[]) {
                    if r.json()["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, addr }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        let r = http::request(self.addr, method, path, headers, body.as_bytes());
        let v = r.json();
        assert_eq!(r.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    fn go(&self, url: &str) {
        self.driver
            .call("POST", &self.path("/url"), Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.driver.call(
            "POST",
            &self.path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` selects, as a person would.
    fn click(&self, css: &str) {
        let element = self.find(css);
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{element}/click")),
            Some(json!({})),
        );
    }

    fn run(&self, script: &str) -> Value {
        self.driver.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns something truthy.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.run(script);
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, to: &Path) -> image::DynamicImage {
        let v = self.driver.call("GET", &self.path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, &png).unwrap();
        image::load_from_memory(&png).unwrap()
    }
}

#[test]
fn page_uploads_an_image_and_shows_neighbours_in_chromium() {
    let required = std::env::var_os("IMGSEARCH_REQUIRE_BROWSER").is_some();
    let (Some(chromium), Some(chromedriver)) = (
        find_program(
            "CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        ),
        find_program("CHROMEDRIVER", &["chromedriver"]),
    ) else {
        assert!(
            !required,
            "IMGSEARCH_REQUIRE_BROWSER is set but chromium/chromedriver are not installed"
        );
        eprintln!("SKIPPED: chromium and chromedriver not found (apt-get install chromium chromium-driver)");
        return;
    };
    let Some((tmp, _, index)) = mnist_index(120) else {
        return;
    };
    let train = tmp.path().join("train");
    mnist_split(&train, "train", 1).unwrap();
    let upload = files_under(&train).remove(0);
    let server = Server::start(Path::new(env!("CARGO_BIN_EXE_imgsearch")), &index, &[]);
    let expected = http::post_multipart(
        server.addr,
        "/api/classify",
        &[("image", Some("u.png"), &std::fs::read(&upload).unwrap())],
    )
    .json()["prediction"]["label"]
        .as_str()
        .unwrap()
        .to_string();

    let driver = Driver::start(&chromedriver);
    let profile = tmp.path().join("chromium-profile");
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    }}});
    let created = driver.call("POST", "/session", Some(caps));
    let session = Session {
        driver: &driver,
        id: created["sessionId"].as_str().unwrap().to_string(),
    };

    session.go(&format!("http://{}/", server.addr));
    session.wait_for(
        "the status line",
        "return document.getElementById('status').textContent.includes('120 images')",
    );

    // Upload through the file input, as a person picking a file does.
    let input = session.find("#file");
    session.driver.call(
        "POST",
        &session.path(&format!("/element/{input}/value")),
        Some(json!({"text": upload.to_str().unwrap()})),
    );
    let shown = session.wait_for(
        "12 loaded result thumbnails",
        "const imgs = [...document.querySelectorAll('#results .card img')];
         return imgs.length === 12 && imgs.every(i => i.complete && i.naturalWidth === 28) ? imgs.length : 0",
    );
    assert_eq!(shown, 12);
    let prediction = session.wait_for(
        "the prediction",
        "return document.getElementById('prediction').textContent",
    );
    assert!(
        prediction
            .as_str()
            .unwrap()
            .starts_with(&format!("predicted label: {expected} ")),
        "{prediction}"
    );
    let artifacts = std::env::var_os("IMGSEARCH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts"));
    let shot = artifacts.join("browser-search.png");
    let picture = session.screenshot(&shot);
    assert!(picture.width() >= 800 && picture.height() >= 600);
    eprintln!("screenshot: {}", shot.display());

    // Clicking a result searches from it: it comes back first, at distance 0.
    let target = session.run("return document.querySelectorAll('#results .card')[3].dataset.id");
    session.click("#results .card:nth-child(4)");
    session.wait_for(
        "the search from the clicked result",
        &format!(
            "const first = document.querySelector('#results .card');
             return document.querySelector('#query span').textContent === 'image {}' && first && first.dataset.id === '{}'",
            target.as_str().unwrap(),
            target.as_str().unwrap()
        ),
    );
    let first_meta =
        session.run("return document.querySelector('#results .card .meta').textContent");
    assert!(
        first_meta.as_str().unwrap().starts_with("#1 · d 0.000"),
        "{first_meta}"
    );

    // The anomalies tab lists thumbnails too.
    session.click(".tab[data-tab=anomalies]");
    session.wait_for(
        "anomaly thumbnails",
        "const imgs = [...document.querySelectorAll('#anomalies .card img')];
         return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)",
    );
    session.screenshot(&artifacts.join("browser-anomalies.png"));

    // The map tab lays out every image; a click on one searches from it.
    session.click(".tab[data-tab=map]");
    session.wait_for(
        "the map's 120 points",
        "return document.getElementById('map-canvas').dataset.points === '120'",
    );
    session.screenshot(&artifacts.join("browser-map.png"));
    // The image drawn farthest from any other, so the click is unambiguous.
    let target = session.run(
        "const canvas = document.getElementById('map-canvas');
         canvas.scrollIntoView({block: 'center'});
         const box = canvas.getBoundingClientRect();
         const ids = JSON.parse(canvas.dataset.ids);
         let best = null, far = -1;
         for (const id of ids) {
           const [x, y] = window.imgsearchMap.screenOf(id);
           let near = Infinity;
           for (const other of ids) if (other !== id) {
             const [u, v] = window.imgsearchMap.screenOf(other);
             near = Math.min(near, Math.hypot(u - x, v - y));
           }
           if (near > far) { far = near; best = [id, Math.round(x - box.width / 2), Math.round(y - box.height / 2)]; }
         }
         return best;",
    );
    let (id, dx, dy) = (
        target[0].as_u64().unwrap(),
        target[1].as_i64().unwrap(),
        target[2].as_i64().unwrap(),
    );
    let canvas = session.find("#map-canvas");
    session.driver.call(
        "POST",
        &session.path("/actions"),
        Some(json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "origin": {ELEMENT: canvas}, "x": dx, "y": dy},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0}
            ]
        }]})),
    );
    session.wait_for(
        "the search from the clicked map point",
        &format!(
            "const first = document.querySelector('#results .card');
             return document.querySelector('#query span').textContent === 'image {id}' && first && first.dataset.id === '{id}'"
        ),
    );

    // The clusters tab: ten rows, each with its decoded centroid and members.
    session.click(".tab[data-tab=clusters]");
    session.wait_for(
        "ten clusters with decoded centroids and member thumbnails",
        "const rows = [...document.querySelectorAll('#clusters .cluster')];
         return rows.length === 10 && rows.every(r => {
           const c = r.querySelector('.centroid img');
           const m = [...r.querySelectorAll('.card img')];
           return c && c.complete && c.naturalWidth === 28 && m.length > 0 && m.every(i => i.complete && i.naturalWidth > 0);
         })",
    );
    session.screenshot(&artifacts.join("browser-clusters.png"));

    driver.call("DELETE", &session.path(""), None);
}
