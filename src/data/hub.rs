//! MNIST, Fashion-MNIST and CIFAR-10 from the Hugging Face Hub, for when no
//! local copy is found: the parquet conversions candle-datasets also uses
//! (revision `refs/convert/parquet`), fetched with `hf-hub` into its cache
//! and read into bytes here; and pretrained weights of model repositories
//! (`hf://timm/resnet18.a1_in1k`, [`weights_file`]) the same way.
//!
//! The hub client honours `HF_ENDPOINT` (a mirror, or the local server of
//! the tests), `HF_HOME` / `HF_HUB_CACHE` (where files go) and `HF_TOKEN`;
//! `HF_HUB_OFFLINE=1` is honoured here: only cached files are used. A file
//! already in the cache is used without contacting the hub.
//!
//! The rows hold PNG bytes (`image.bytes`, or `img.bytes` for CIFAR-10) and
//! an integer `label`. candle-datasets' own parquet readers unwrap every
//! decode and transpose CIFAR's height and width; here a bad row is an error
//! naming the cached file, and RGB pixels go to `c×h×w` planes as decoded.

use super::ImageSet;
use super::folder::hwc_to_chw;
use crate::config::DatasetName;
use crate::error::InputContext;
use anyhow::Result;
use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFClientSync, HFError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parquet::file::reader::SerializedFileReader;
use parquet::record::Field;
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The parquet conversion every dataset repository gets on the hub.
pub const REVISION: &str = "refs/convert/parquet";

/// Where a dataset lives on the hub.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    pub repo: &'static str,
    /// Training and test files in the repository.
    pub files: [&'static str; 2],
    /// The struct column holding the PNG `bytes`.
    pub image_column: &'static str,
    pub channels: usize,
}

pub fn remote(name: DatasetName) -> Option<Remote> {
    match name {
        DatasetName::Mnist => Some(Remote {
            repo: "ylecun/mnist",
            files: ["mnist/train/0000.parquet", "mnist/test/0000.parquet"],
            image_column: "image",
            channels: 1,
        }),
        DatasetName::FashionMnist => Some(Remote {
            repo: "zalando-datasets/fashion_mnist",
            files: [
                "fashion_mnist/train/0000.parquet",
                "fashion_mnist/test/0000.parquet",
            ],
            image_column: "image",
            channels: 1,
        }),
        DatasetName::Cifar10 => Some(Remote {
            repo: "uoft-cs/cifar10",
            files: [
                "plain_text/train/0000.parquet",
                "plain_text/test/0000.parquet",
            ],
            image_column: "img",
            channels: 3,
        }),
        DatasetName::ImageFolder => None,
    }
}

/// A dataset read from the hub's cache.
#[derive(Debug)]
pub struct HubData {
    /// The repository's folder in the cache.
    pub dir: PathBuf,
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Why the hub gave nothing; part of the "cannot find" message.
#[derive(Debug)]
pub struct Unavailable {
    /// The cache folder that was looked at.
    pub cache: PathBuf,
    /// The repository's address on the hub.
    pub url: String,
    /// Not downloaded because downloading is off (and why), or the error.
    pub reason: String,
    pub downloading_off: bool,
}

/// `HF_HUB_OFFLINE` set to a true value.
pub fn offline_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// An error and its causes on one line, without the repetitions of
/// reqwest's messages; a failed connection says so plainly.
fn describe(e: &HFError) -> String {
    if let HFError::Request { source, url } = e {
        let mut root: &dyn std::error::Error = source;
        while let Some(s) = root.source() {
            root = s;
        }
        let url = url.as_deref().unwrap_or("the hub");
        return if source.is_connect() {
            format!("cannot connect to {url}: {root}")
        } else if source.is_timeout() {
            format!("timed out reaching {url}: {root}")
        } else {
            format!("the request to {url} failed: {root}")
        };
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How long to wait for the hub to accept a connection, and then for each
/// read of the answer (`CNN_DOWNLOAD_TIMEOUT` seconds sets both).
fn timeouts() -> Result<(Duration, Duration)> {
    match std::env::var("CNN_DOWNLOAD_TIMEOUT") {
        Err(_) => Ok((Duration::from_secs(15), Duration::from_secs(60))),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                let d = Duration::from_secs_f64(s);
                Ok((d, d))
            }
            _ => crate::bail_input!(
                "CNN_DOWNLOAD_TIMEOUT is {v:?}; give the seconds to wait for the hub, e.g. 30"
            ),
        },
    }
}

/// The hub client, whose downloads time out instead of waiting forever for
/// a server that does not answer, and how long a download may show no sign
/// of life (see [`Watch`]).
fn client() -> Result<(HFClient, Duration)> {
    let (connect, read) = timeouts()?;
    let http = reqwest::Client::builder()
        .user_agent(format!("cnn/{} hf-hub", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .read_timeout(read)
        .build()
        .map_err(|e| anyhow::anyhow!("setting up the HTTP client: {e}"))?;
    let client = HFClient::builder()
        .client(http)
        .retry_max_attempts(2)
        .build()
        .input_context(|| {
            "cannot set up the Hugging Face Hub client (is HF_ENDPOINT a valid URL?)".to_string()
        })?;
    Ok((client, connect.max(read)))
}

/// When a download last showed a sign of life (an answer, a chunk of the
/// file): hf-hub asks the hub for a file's metadata with an HTTP client of
/// its own, without timeouts, so a server that never answers is noticed
/// here rather than by the client.
#[derive(Clone)]
struct Watch {
    bar: Option<ProgressBar>,
    last: Arc<Mutex<Instant>>,
}

impl Watch {
    fn new(bar: Option<ProgressBar>) -> Watch {
        Watch {
            bar,
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }

    fn quiet_for(&self) -> Duration {
        self.last.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// How a download waited for ended.
enum Waited<T> {
    Done(T),
    /// No sign of life for this long.
    Stalled(Duration),
}

/// Runs `f` (a download reporting to `watch`) on its own thread and waits
/// for it, giving up when it shows no sign of life for `stall`, or as soon
/// as Ctrl-C or SIGTERM asks `cnn train` to stop (the partial file stays in
/// the hub's cache, which the next download replaces).
fn interruptible<T: Send + 'static>(
    what: &str,
    watch: &Watch,
    stall: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Waited<T>> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("download".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| anyhow::anyhow!("starting the download: {e}"))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(v) => return Ok(Waited::Done(v)),
            Err(RecvTimeoutError::Timeout) if crate::interrupt::requested() => {
                return Err(anyhow::Error::new(crate::error::Interrupted(format!(
                    "interrupted while downloading {what}; nothing else was done (run the command \
                     again to download it)"
                ))));
            }
            Err(RecvTimeoutError::Timeout) => {
                let quiet = watch.quiet_for();
                if quiet >= stall {
                    return Ok(Waited::Stalled(quiet));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the download of {what} stopped without a result")
            }
        }
    }
}

/// Reads the dataset from the cache, downloading what is missing when
/// `download` is allowed (`off_reason` says why it is not). `Ok(Err(..))`
/// when the files could not be had; `Err` for a client that cannot be set
/// up or a cached file that does not read.
pub fn fetch(
    remote: &Remote,
    classes: usize,
    download: Result<(), String>,
    quiet: bool,
) -> Result<Result<HubData, Unavailable>> {
    let (client, stall) = client()?;
    let cache = client.cache_dir().to_path_buf();
    let url = format!("{}/datasets/{}", client.endpoint(), remote.repo);
    let dir = cache.join(format!("datasets--{}", remote.repo.replace('/', "--")));
    let client = HFClientSync::from_inner(client)
        .map_err(|e| anyhow::anyhow!("starting the Hugging Face Hub client: {}", describe(&e)))?;
    let (owner, name) = hf_hub::split_id(remote.repo);
    let repo = client.dataset(owner, name);

    // The hub could not be asked, or did not answer.
    let failed = |e: &HFError| Unavailable {
        cache: dir.clone(),
        url: url.clone(),
        reason: describe(e),
        downloading_off: false,
    };
    let mut paths = Vec::new();
    for file in remote.files {
        let cached = repo
            .download_file()
            .filename(file)
            .revision(REVISION)
            .local_files_only(true)
            .send();
        let cached = match cached {
            Ok(path) => path,
            Err(HFError::LocalEntryNotFound { .. }) => {
                if let Err(why) = &download {
                    return Ok(Err(Unavailable {
                        cache: dir.clone(),
                        url: url.clone(),
                        reason: why.clone(),
                        downloading_off: true,
                    }));
                }
                if !quiet {
                    eprintln!(
                        "downloading {file} of {url} (revision {REVISION}) into {}",
                        cache.display()
                    );
                }
                let bar = bar(file, quiet);
                let watch = Watch::new(bar.clone());
                let (repo, handler) = (repo.clone(), watch.clone());
                let result = interruptible(file, &watch, stall, move || {
                    repo.download_file()
                        .filename(file)
                        .revision(REVISION)
                        .progress(handler)
                        .send()
                });
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                match result? {
                    Waited::Done(Ok(path)) => path,
                    Waited::Done(Err(e)) => return Ok(Err(failed(&e))),
                    Waited::Stalled(quiet) => {
                        return Ok(Err(Unavailable {
                            cache: dir.clone(),
                            url: url.clone(),
                            reason: format!(
                                "timed out reaching {url}: no answer in {:.0} s while downloading \
                                 {file} (CNN_DOWNLOAD_TIMEOUT sets how many seconds to wait)",
                                quiet.as_secs_f64()
                            ),
                            downloading_off: false,
                        }));
                    }
                }
            }
            Err(e) => return Ok(Err(failed(&e))),
        };
        paths.push(cached);
    }
    let train = read_parquet(&paths[0], remote, classes)?;
    let test = read_parquet(&paths[1], remote, classes)?;
    if train.shape() != test.shape() {
        crate::bail_input!(
            "the cached files of {} hold images of different sizes ({:?} and {:?}); delete {} to download \
             them again",
            remote.repo,
            train.shape(),
            test.shape(),
            dir.display()
        );
    }
    Ok(Ok(HubData { dir, train, test }))
}

/// A file of a model repository on the hub, named `hf://OWNER/NAME`
/// (its `model.safetensors`), `hf://OWNER/NAME/FILE`, with `@REVISION`
/// after the name for another branch, tag or commit than `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub repo: String,
    pub file: String,
    pub revision: String,
}

impl HubFile {
    /// `None` for a path that is not an `hf://` address; an error for one
    /// that is, but malformed.
    pub fn parse(path: &Path) -> Result<Option<HubFile>> {
        let Some(rest) = path.to_str().and_then(|s| s.strip_prefix("hf://")) else {
            return Ok(None);
        };
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let file = parts.next().unwrap_or("model.safetensors");
        let (name, revision) = match name.split_once('@') {
            Some((n, r)) => (n, r),
            None => (name, "main"),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(owner) || !ok(name) || revision.is_empty() || file.is_empty() || file.ends_with('/')
        {
            crate::bail_input!(
                "{} is not a Hugging Face Hub address; expected hf://OWNER/NAME (its \
                 model.safetensors), hf://OWNER/NAME/FILE or hf://OWNER/NAME@REVISION, such as \
                 hf://timm/resnet18.a1_in1k",
                path.display()
            );
        }
        Ok(Some(HubFile {
            repo: format!("{owner}/{name}"),
            file: file.to_string(),
            revision: revision.to_string(),
        }))
    }
}

/// The local path of `path`: itself, or for an `hf://` address the file
/// in the hub's cache, downloaded first when it is not there (with a byte
/// bar on a terminal; never with `HF_HUB_OFFLINE=1`). `what` names the
/// setting in messages (`training.init_from`).
pub fn weights_file(path: &Path, what: &str, quiet: bool) -> Result<PathBuf> {
    let Some(hub) = HubFile::parse(path)? else {
        return Ok(path.to_path_buf());
    };
    let (client, stall) = client()?;
    let url = format!("{}/{}", client.endpoint(), hub.repo);
    let cache = client.cache_dir().to_path_buf();
    let client = HFClientSync::from_inner(client)
        .map_err(|e| anyhow::anyhow!("starting the Hugging Face Hub client: {}", describe(&e)))?;
    let (owner, name) = hf_hub::split_id(&hub.repo);
    let repo = client.model(owner, name);
    let cached = repo
        .download_file()
        .filename(hub.file.as_str())
        .revision(hub.revision.as_str())
        .local_files_only(true)
        .send();
    match cached {
        Ok(p) => return Ok(p),
        Err(HFError::LocalEntryNotFound { .. }) => {}
        Err(e) => crate::bail_input!("{what} {}: {}", path.display(), describe(&e)),
    }
    if offline_env() {
        crate::bail_input!(
            "{what} {}: {} is not in the hub's cache ({}) and HF_HUB_OFFLINE is set; download it \
             once with the hub reachable, or give a local file",
            path.display(),
            hub.file,
            cache.display()
        );
    }
    if !quiet {
        eprintln!(
            "downloading {} of {url} (revision {}) into {}",
            hub.file,
            hub.revision,
            cache.display()
        );
    }
    let bar = bar(&hub.file, quiet);
    let watch = Watch::new(bar.clone());
    let (file, revision, handler) = (hub.file.clone(), hub.revision.clone(), watch.clone());
    let result = interruptible(&hub.file, &watch, stall, move || {
        repo.download_file()
            .filename(file.as_str())
            .revision(revision.as_str())
            .progress(handler)
            .send()
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result? {
        Waited::Done(Ok(p)) => Ok(p),
        Waited::Done(Err(e)) => crate::bail_input!(
            "{what} {}: could not download {} from {url}: {}; check the address (a repository \
             without {} needs its file named: hf://OWNER/NAME/FILE, safetensors only)",
            path.display(),
            hub.file,
            describe(&e),
            hub.file
        ),
        Waited::Stalled(q) => crate::bail_input!(
            "{what} {}: timed out reaching {url}: no answer in {:.0} s (CNN_DOWNLOAD_TIMEOUT sets \
             how many seconds to wait)",
            path.display(),
            q.as_secs_f64()
        ),
    }
}

/// A byte bar on a terminal; nothing when stderr is piped or quiet.
fn bar(file: &str, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(file.to_string());
    Some(bar)
}

impl ProgressHandler for Watch {
    fn on_progress(&self, event: &ProgressEvent) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
        let Some(bar) = &self.bar else { return };
        match event {
            ProgressEvent::Download(DownloadEvent::Start { total_bytes, .. }) => {
                bar.set_length(*total_bytes)
            }
            ProgressEvent::Download(DownloadEvent::Progress { files }) => {
                for f in files {
                    bar.set_position(f.bytes_completed);
                }
            }
            ProgressEvent::Download(DownloadEvent::AggregateProgress {
                bytes_completed, ..
            }) => bar.set_position(*bytes_completed),
            _ => {}
        }
    }
}

/// Width, height and `c×h×w` pixels of one row, or why it does not decode.
type DecodedRow = Result<(u32, u32, Vec<u8>), String>;

/// Reads the rows of a hub parquet file: PNG bytes and a label each.
pub fn read_parquet(path: &Path, remote: &Remote, classes: usize) -> Result<ImageSet> {
    let again = || format!("delete {} to download it again", path.display());
    let file =
        std::fs::File::open(path).input_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file).input_context(|| {
        format!(
            "{} is not a readable parquet file (an interrupted download?); {}",
            path.display(),
            again()
        )
    })?;
    let mut rows: Vec<(Vec<u8>, i64)> = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let row = row
            .input_context(|| format!("{}: row {i} does not read; {}", path.display(), again()))?;
        let mut image = None;
        let mut label = None;
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Group(inner) if name == remote.image_column => {
                    for (key, value) in inner.get_column_iter() {
                        if let (true, Field::Bytes(b)) = (key == "bytes", value) {
                            image = Some(b.data().to_vec());
                        }
                    }
                }
                Field::Long(l) if name == "label" => label = Some(*l),
                Field::Int(l) if name == "label" => label = Some(*l as i64),
                _ => {}
            }
        }
        let (Some(image), Some(label)) = (image, label) else {
            let columns: Vec<&str> = row.get_column_iter().map(|(n, _)| n.as_str()).collect();
            crate::bail_input!(
                "{}: row {i} has no `{}.bytes` image or no integer `label` (its columns: {}); this is not \
                 the hub's parquet conversion of {}; {}",
                path.display(),
                remote.image_column,
                columns.join(", "),
                remote.repo,
                again()
            );
        };
        if !(0..classes as i64).contains(&label) {
            crate::bail_input!(
                "{}: row {i} has label {label}, outside 0..{}; {}",
                path.display(),
                classes - 1,
                again()
            );
        }
        rows.push((image, label));
    }
    if rows.is_empty() {
        crate::bail_input!("{} holds no images; {}", path.display(), again());
    }
    let channels = remote.channels;
    let decoded: Vec<DecodedRow> = rows
        .par_iter()
        .map(|(bytes, _)| {
            let img = super::image_file::decode(bytes, None)?;
            let (w, h) = (img.width(), img.height());
            let pixels = if channels == 1 {
                img.to_luma8().into_raw()
            } else {
                hwc_to_chw(img.to_rgb8().as_raw(), (w * h) as usize)
            };
            Ok((w, h, pixels))
        })
        .collect();
    let mut set = ImageSet {
        channels,
        height: 0,
        width: 0,
        pixels: Vec::new(),
        labels: Vec::with_capacity(rows.len()),
        files: None,
    };
    for (i, (result, (_, label))) in decoded.into_iter().zip(&rows).enumerate() {
        let (w, h, pixels) = result.map_err(|e| {
            crate::input_error!(
                "{}: the image of row {i} does not decode ({e}); {}",
                path.display(),
                again()
            )
        })?;
        if i == 0 {
            set.width = w as usize;
            set.height = h as usize;
            set.pixels.reserve(rows.len() * pixels.len());
        } else if (w as usize, h as usize) != (set.width, set.height) {
            crate::bail_input!(
                "{}: row {i} is a {w}×{h} image but row 0 is {}×{}; {}",
                path.display(),
                set.width,
                set.height,
                again()
            );
        }
        set.pixels.extend_from_slice(&pixels);
        set.labels.push(*label as u16);
    }
    Ok(set)
}
