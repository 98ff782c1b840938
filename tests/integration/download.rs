//! Downloading MNIST from the Hugging Face Hub when no local copy exists,
//! against a stand-in hub on 127.0.0.1 (`HF_ENDPOINT`): it answers the
//! requests hf-hub makes for a file of a dataset repository (a HEAD and a
//! GET of `/datasets/<repo>/resolve/<revision>/<file>`, redirected to a
//! content URL as the hub does for large files) and serves parquet files
//! written here, in the hub's schema, from the committed real MNIST subset.
//! The download trains exactly like the IDX files; the second run uses the
//! cache with the server gone; offline or refused, the error lists every
//! place tried and the address it could not reach.

use crate::common::*;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const RESOLVE: &str = "/datasets/ylecun/mnist/resolve/refs%2Fconvert%2Fparquet/";

/// A parquet file like the hub's conversion of ylecun/mnist: a struct
/// column `image` {`bytes`: PNG, `path`: string} and an int64 `label`.
fn mnist_parquet(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let schema = parquet::schema::parser::parse_message_type(
        "message schema {
            optional group image {
                optional binary bytes;
                optional binary path (STRING);
            }
            optional int64 label;
        }",
    )
    .unwrap();
    let pngs: Vec<ByteArray> = pixels
        .chunks_exact(784)
        .map(|img| {
            let mut png = Vec::new();
            image::GrayImage::from_raw(28, 28, img.to_vec())
                .unwrap()
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            ByteArray::from(png)
        })
        .collect();
    let n = labels.len();
    let mut out = Vec::new();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(&mut out, Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    // image.bytes: present (definition level 2 = image and bytes set).
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&pngs, Some(&vec![2; n]), None)
        .unwrap();
    col.close().unwrap();
    // image.path: null, as on the hub (level 1 = image set, path not).
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&[], Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    col.typed::<Int64Type>()
        .write_batch(&labels, Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    out
}

/// The stand-in hub: serves `files` (repository path → bytes) and logs
/// every request line.
pub(crate) struct Hub {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hub {
    pub(crate) fn start(files: HashMap<String, Vec<u8>>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, port, &files, &log2);
                }
            }
        });
        Hub {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// One request per connection (`Connection: close`), answered the way the
/// hub answers for a file stored in LFS: the resolve URL redirects to the
/// content with the file's metadata in `X-Linked-*` headers.
fn serve(
    mut stream: TcpStream,
    port: u16,
    files: &HashMap<String, Vec<u8>>,
    log: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let request = request.trim().to_string();
    log.lock().unwrap().push(request.clone());
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head = method == "HEAD";
    // A dataset's file by its name in the repository; any other
    // repository's (a model's) by its whole path, `OWNER/NAME/resolve/REV/FILE`.
    let key = path.strip_prefix(RESOLVE).or_else(|| {
        path.strip_prefix('/')
            .filter(|p| !p.starts_with("cdn/") && p.contains("/resolve/"))
    });
    let response = if let Some(file) = key {
        match files.get(file) {
            Some(body) => format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/cdn/{file}\r\n\
                 X-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"etag-{}\"\r\nX-Linked-Size: {}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                file.replace('/', "-"),
                body.len()
            )
            .into_bytes(),
            None => not_found(),
        }
    } else if let Some(file) = path.strip_prefix("/cdn/") {
        match files.get(file) {
            Some(body) => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if !head {
                    r.extend_from_slice(body);
                }
                r
            }
            None => not_found(),
        }
    } else {
        not_found()
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
}

fn not_found() -> Vec<u8> {
    b"HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        .to_vec()
}

/// `cnn` with the hub at `endpoint`, downloads allowed, cache in `hf_home`.
pub(crate) fn online(dir: &Path, endpoint: &str, hf_home: &Path) -> assert_cmd::Command {
    let mut c = cnn(dir);
    c.env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE");
    c
}

/// A port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const TRAIN: &[&str] = &[
    "train",
    "--epochs",
    "2",
    "--set",
    "data.val_size=500",
    "--config",
];

#[test]
fn mnist_downloads_from_the_hub_trains_like_the_idx_files_and_is_then_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (train, train_labels, test, test_labels) = mnist_arrays();
    let files = HashMap::from([
        (
            "mnist/train/0000.parquet".to_string(),
            mnist_parquet(&train, &train_labels),
        ),
        (
            "mnist/test/0000.parquet".to_string(),
            mnist_parquet(&test, &test_labels),
        ),
    ]);
    let hub = Hub::start(files);
    let hf_home = dir.path().join("hf");
    let lenet = config_path("lenet.json");

    let (code, _, err) = run(online(dir.path(), &hub.endpoint(), &hf_home)
        .args(TRAIN)
        .arg(&lenet)
        .args(["--out", "hub-run"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("downloading mnist/train/0000.parquet of")
            && err.contains("/datasets/ylecun/mnist")
            && err.contains("mnist from the Hugging Face Hub cache"),
        "{err}"
    );
    let requests = hub.requests();
    for file in ["train", "test"] {
        let resolve = format!("{RESOLVE}mnist/{file}/0000.parquet HTTP/1.1");
        assert!(
            requests.contains(&format!("HEAD {resolve}")),
            "{requests:?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /cdn/mnist/train/0000.parquet")),
        "{requests:?}"
    );
    let cache = hf_home.join("hub/datasets--ylecun--mnist");
    assert!(
        cache
            .join("snapshots")
            .join(COMMIT)
            .join("mnist/train/0000.parquet")
            .exists()
    );

    // PNG is lossless: the same images and labels as the IDX files, so the
    // same training, number for number.
    let (code, _, err) = run(cnn(dir.path())
        .args(TRAIN)
        .arg(&lenet)
        .args(["--out", "idx-run", "--data-dir"])
        .arg(mnist_small()));
    assert_eq!(code, 0, "{err}");
    let hub_history = history_without_timing(&dir.path().join("hub-run"));
    assert_eq!(
        hub_history,
        history_without_timing(&dir.path().join("idx-run"))
    );
    assert!(hub_history[1]["test_acc"].as_f64().unwrap() > 0.8);

    // The resolved config does not pin a local directory.
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("hub-run/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["data"]["dir"], serde_json::Value::Null);

    // The server goes away: eval and a second run use the cache.
    let endpoint = hub.endpoint();
    drop(hub);
    let other = tempfile::tempdir().unwrap();
    let (code, out, err) = run(online(other.path(), &endpoint, &hf_home)
        .args(["eval", "--json", "--checkpoint"])
        .arg(dir.path().join("hub-run/best.safetensors")));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("downloading"), "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["samples"], 1000);
    assert!(hub_history.iter().any(|r| r["test_acc"] == e["accuracy"]));
    let (code, _, err) = run(online(other.path(), &endpoint, &hf_home)
        .args([
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "500",
            "--no-download",
        ])
        .args(["--set", "data.val_size=500", "--config"])
        .arg(&lenet));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn without_local_files_or_a_reachable_hub_the_error_lists_every_place_tried() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let hf_home = dir.path().join("hf");
    let lenet = config_path("lenet.json");
    let places = [
        "cannot find the mnist dataset. Looked in:",
        "data/mnist (./data/<dataset>): no such directory",
        "/usr/share/datasets/mnist (system datasets)",
        "datasets--ylecun--mnist (Hugging Face Hub cache): not downloaded",
        "train-images-idx3-ubyte",
        "To fix:",
    ];

    // The hub cannot be reached.
    let err = assert_usage_error(
        online(dir.path(), &endpoint, &hf_home)
            .args(["train", "--config"])
            .arg(&lenet),
        &places,
    );
    assert!(
        err.contains(&format!(
            "could not download it from {endpoint}/datasets/ylecun/mnist"
        )),
        "{err}"
    );
    // Downloading turned off three ways; each says so.
    for (extra, env, why) in [
        (&["--no-download"][..], None, "--no-download"),
        (
            &["--set", "data.download=false"][..],
            None,
            "data.download is false",
        ),
        (
            &[][..],
            Some(("HF_HUB_OFFLINE", "1")),
            "HF_HUB_OFFLINE is set",
        ),
    ] {
        let mut c = online(dir.path(), &endpoint, &hf_home);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let err = assert_usage_error(
            c.args(["train", "--config"]).arg(&lenet).args(extra),
            &places,
        );
        assert!(
            err.contains("and did not download it from") && err.contains(why),
            "{err}"
        );
    }
    // CNN_DATA_DIR and a recorded data.dir are listed too.
    let err = assert_usage_error(
        online(dir.path(), &endpoint, &hf_home)
            .env("CNN_DATA_DIR", dir.path().join("mine"))
            .args([
                "train",
                "--no-download",
                "--set",
                "data.dir=\"elsewhere\"",
                "--config",
            ])
            .arg(&lenet),
        &[
            "mine/mnist (CNN_DATA_DIR/<dataset>)",
            "elsewhere (data.dir in the config)",
        ],
    );
    assert!(!err.contains("panicked"));
}

/// A hub that accepts connections and never answers; counts them.
fn silent_hub() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    (endpoint, accepted)
}

/// Issue #21, item 5: a hub that never answers is given up on after the
/// timeout (not waited for forever), with the address named.
#[test]
fn a_hub_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, accepted) = silent_hub();
    let started = std::time::Instant::now();
    let err = assert_usage_error(
        online(dir.path(), &endpoint, &dir.path().join("hf"))
            .env("CNN_DOWNLOAD_TIMEOUT", "1")
            .args(["train", "--config"])
            .arg(config_path("lenet.json")),
        &[
            "timed out reaching",
            &endpoint,
            "cannot find the mnist dataset",
        ],
    );
    assert!(accepted.load(Ordering::SeqCst) >= 1, "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(!dir.path().join("runs").exists(), "nothing is written");
    assert_usage_error(
        online(dir.path(), &endpoint, &dir.path().join("hf"))
            .env("CNN_DOWNLOAD_TIMEOUT", "soon")
            .args(["train", "--config"])
            .arg(config_path("lenet.json")),
        &["CNN_DOWNLOAD_TIMEOUT is \"soon\"", "seconds"],
    );
}

/// Issue #21, item 5: the first Ctrl-C stops a download in progress (exit
/// 130 at once), as it stops training.
#[test]
fn the_first_ctrl_c_interrupts_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, accepted) = silent_hub();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cnn"))
        .current_dir(dir.path())
        .args(["train", "--config"])
        .arg(config_path("lenet.json"))
        .env_remove("CNN_DATA_DIR")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HOME", dir.path().join("hf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "no request reached the hub"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling the child started above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted while downloading mnist/train/0000.parquet"),
        "{err}"
    );
    assert!(asked.elapsed().as_secs() < 5, "took {:?}", asked.elapsed());
    assert!(!dir.path().join("runs").exists(), "nothing is written");
}
