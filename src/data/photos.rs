//! Images kept as their files and decoded when a batch needs them
//! (`data.cache: "none"`), so that a folder of 100,000 photos trains in the
//! memory of a few batches; and [`Original`], an image at its own size,
//! which both this reader and the in-memory sets hand to the fitting and
//! the random resized crop.
//!
//! Decoding is a pure function of the file, so the images a step sees do not
//! depend on when or where they were decoded: the training threads decode
//! what they need, and `data.workers` threads decode the next batch's
//! photos ahead of them ([`Photos::prefetch`]) into a bounded store that the
//! training threads take from. Same seed, same numbers, with or without
//! them.

use super::folder::hwc_to_chw;
use crate::config::Resize;
use anyhow::Result;
use image::{GrayImage, RgbImage};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// An image at the size of its file (or of the set holding it), grayscale
/// or RGB as the network takes it.
#[derive(Debug, Clone)]
pub enum Original {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl Original {
    /// The image of `c×h×w` planes (`c` is 1 or 3).
    pub fn from_planes(pixels: &[u8], [c, h, w]: [usize; 3]) -> Original {
        let (wu, hu) = (w as u32, h as u32);
        if c == 1 {
            return Original::Gray(
                GrayImage::from_raw(wu, hu, pixels.to_vec()).expect("h×w bytes"),
            );
        }
        let plane = h * w;
        let mut rgb = Vec::with_capacity(3 * plane);
        for i in 0..plane {
            rgb.extend_from_slice(&[pixels[i], pixels[plane + i], pixels[2 * plane + i]]);
        }
        Original::Rgb(RgbImage::from_raw(wu, hu, rgb).expect("h×w×3 bytes"))
    }

    /// A decoded file, as `channels` (1: grayscale, else RGB) take it.
    pub fn from_image(img: &image::DynamicImage, channels: usize) -> Original {
        if channels == 1 {
            Original::Gray(img.to_luma8())
        } else {
            Original::Rgb(img.to_rgb8())
        }
    }

    /// Width and height.
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Original::Gray(g) => g.dimensions(),
            Original::Rgb(c) => c.dimensions(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Original::Gray(g) => g.as_raw().len(),
            Original::Rgb(c) => c.as_raw().len(),
        }
    }

    /// Made `shape` the way `data.resize` says (stretched, or the shorter
    /// side scaled and the centre cut out), as `c×h×w` planes.
    pub fn fit(&self, [_, h, w]: [usize; 3], resize: Resize) -> Vec<u8> {
        let (tw, th, shorter) = (w as u32, h as u32, resize.shorter_side());
        match self {
            Original::Gray(g) => super::convert::resize(g, tw, th, shorter).into_raw(),
            Original::Rgb(c) => {
                hwc_to_chw(super::convert::resize(c, tw, th, shorter).as_raw(), h * w)
            }
        }
    }

    /// The `cw×ch` window at `(x, y)` resized to `shape` (bilinear, with
    /// antialiasing when shrinking), as `c×h×w` planes.
    pub fn crop_resized(
        &self,
        (x, y, cw, ch): (u32, u32, u32, u32),
        [_, h, w]: [usize; 3],
    ) -> Vec<u8> {
        use image::imageops::{FilterType, crop_imm, resize};
        let (tw, th) = (w as u32, h as u32);
        match self {
            Original::Gray(g) => {
                let part = crop_imm(g, x, y, cw, ch).to_image();
                if (cw, ch) == (tw, th) {
                    part.into_raw()
                } else {
                    resize(&part, tw, th, FilterType::Triangle).into_raw()
                }
            }
            Original::Rgb(c) => {
                let part = crop_imm(c, x, y, cw, ch).to_image();
                let part = if (cw, ch) == (tw, th) {
                    part
                } else {
                    resize(&part, tw, th, FilterType::Triangle)
                };
                hwc_to_chw(part.as_raw(), h * w)
            }
        }
    }
}

/// Photos decoded ahead and not yet taken: at most this many bytes.
const AHEAD_BYTES: usize = 256 << 20;

/// The files of a set read with `data.cache: "none"`, in the set's order.
pub struct Photos {
    shared: Arc<Shared>,
    workers: usize,
    /// Lists of images to decode ahead, to the worker threads (started by
    /// the first [`Photos::prefetch`]).
    queue: Mutex<Option<Sender<Request>>>,
}

/// What a batch will need of its photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// At their own size (for the random resized crop).
    Original,
    /// Made the set's shape.
    Fitted,
}

struct Request {
    id: u64,
    want: Want,
    indices: Vec<u32>,
}

struct Shared {
    paths: Vec<PathBuf>,
    shape: [usize; 3],
    resize: Resize,
    ahead: Mutex<Ahead>,
}

/// A photo decoded ahead.
enum Ready {
    Original(Arc<Original>),
    Fitted(Vec<u8>),
}

impl Ready {
    fn bytes(&self) -> usize {
        match self {
            Ready::Original(o) => o.bytes(),
            Ready::Fitted(v) => v.len(),
        }
    }
}

/// Decoded photos waiting to be taken, oldest first.
#[derive(Default)]
struct Ahead {
    images: HashMap<u32, Ready>,
    order: VecDeque<u32>,
    bytes: usize,
    /// The latest prefetch request: older ones still queued are dropped.
    latest: u64,
}

impl Ahead {
    fn insert(&mut self, i: u32, img: Ready) {
        self.bytes += img.bytes();
        if let Some(old) = self.images.insert(i, img) {
            self.bytes -= old.bytes();
        } else {
            self.order.push_back(i);
        }
        while self.bytes > AHEAD_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.images.remove(&oldest) {
                self.bytes -= old.bytes();
            }
        }
    }

    fn take(&mut self, i: u32, want: Want) -> Option<Ready> {
        let ready = matches!(
            (self.images.get(&i)?, want),
            (Ready::Original(_), Want::Original) | (Ready::Fitted(_), Want::Fitted)
        );
        if !ready {
            return None;
        }
        let img = self.images.remove(&i)?;
        self.bytes -= img.bytes();
        self.order.retain(|&j| j != i);
        Some(img)
    }
}

impl std::fmt::Debug for Photos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Photos")
            .field("files", &self.shared.paths.len())
            .field("resize", &self.shared.resize)
            .field("workers", &self.workers)
            .finish()
    }
}

impl Photos {
    /// The photos at `paths`, to be made `shape` by `resize`.
    pub fn new(paths: Vec<PathBuf>, shape: [usize; 3], resize: Resize, workers: usize) -> Photos {
        Photos {
            shared: Arc::new(Shared {
                paths,
                shape,
                resize,
                ahead: Mutex::new(Ahead::default()),
            }),
            workers,
            queue: Mutex::new(None),
        }
    }

    pub fn len(&self) -> usize {
        self.shared.paths.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shared.paths.is_empty()
    }
    pub fn path(&self, i: usize) -> &Path {
        &self.shared.paths[i]
    }
    pub fn paths(&self) -> &[PathBuf] {
        &self.shared.paths
    }
    pub fn resize(&self) -> Resize {
        self.shared.resize
    }
    pub fn workers(&self) -> usize {
        self.workers
    }

    fn take(&self, i: u32, want: Want) -> Option<Ready> {
        self.shared
            .ahead
            .lock()
            .expect("not poisoned")
            .take(i, want)
    }

    /// Image `i` at the size of its file: decoded ahead, or decoded now.
    pub fn original(&self, i: u32) -> Result<Arc<Original>> {
        match self.take(i, Want::Original) {
            Some(Ready::Original(img)) => Ok(img),
            _ => self.shared.decode(i).map(Arc::new),
        }
    }

    /// Image `i` made the set's shape, as `c×h×w` planes.
    pub fn fitted(&self, i: u32) -> Result<Vec<u8>> {
        match self.take(i, Want::Fitted) {
            Some(Ready::Fitted(img)) => Ok(img),
            _ => self.shared.fitted(i),
        }
    }

    /// Starts decoding `indices` on the worker threads (none with
    /// `data.workers: 0`), as the batch will `want` them; a newer request
    /// drops what is left of older ones.
    pub fn prefetch(&self, indices: &[u32], want: Want) {
        if self.workers == 0 || indices.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().expect("not poisoned");
        if queue.is_none() {
            *queue = Some(self.start_workers());
        }
        let id = {
            let mut ahead = self.shared.ahead.lock().expect("not poisoned");
            ahead.latest += 1;
            ahead.latest
        };
        // Each worker takes its share of the list, in turn.
        let tx = queue.as_ref().expect("started");
        for k in 0..self.workers {
            let share: Vec<u32> = indices
                .iter()
                .skip(k)
                .step_by(self.workers)
                .copied()
                .collect();
            // A worker that has gone (it cannot, short of a panic) only
            // means the training threads decode everything themselves.
            let _ = tx.send(Request {
                id,
                want,
                indices: share,
            });
        }
    }

    fn start_workers(&self) -> Sender<Request> {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        for k in 0..self.workers {
            let shared = Arc::clone(&self.shared);
            let rx = Arc::clone(&rx);
            // Decoding ahead is an optimisation: if the thread cannot be
            // started, the training threads decode every photo themselves.
            let _ = std::thread::Builder::new()
                .name(format!("cnn-decode-{k}"))
                .spawn(move || shared.work(&rx));
        }
        tx
    }
}

impl Shared {
    fn decode(&self, i: u32) -> Result<Original> {
        let path = &self.paths[i as usize];
        let img = super::image_file::open_or_why(path).map_err(|why| {
            crate::input_error!(
                "cannot read image {}: {why}. With data.cache \"none\" each photo is read when a batch \
                 needs it (the folder was only checked when listed); fix or remove the file, or use \
                 data.cache \"memory\", which decodes every image before training starts",
                path.display()
            )
        })?;
        Ok(Original::from_image(&img, self.shape[0]))
    }

    fn fitted(&self, i: u32) -> Result<Vec<u8>> {
        Ok(self.decode(i)?.fit(self.shape, self.resize))
    }

    /// A worker's loop: decode each list received, unless a newer one came.
    fn work(&self, rx: &Mutex<Receiver<Request>>) {
        loop {
            let next = rx.lock().expect("not poisoned").recv();
            let Ok(Request { id, want, indices }) = next else {
                return; // the set is gone
            };
            for i in indices {
                if self.ahead.lock().expect("not poisoned").latest != id {
                    break;
                }
                // A photo that does not decode is left to the training
                // thread, which reports it.
                let _t = crate::profile::scope(|| "photos: decoded ahead (data.workers)".into());
                let ready = match want {
                    Want::Original => self.decode(i).map(|o| Ready::Original(Arc::new(o))),
                    Want::Fitted => self.fitted(i).map(Ready::Fitted),
                };
                if let Ok(ready) = ready {
                    self.ahead.lock().expect("not poisoned").insert(i, ready);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(dir: &Path, name: &str, w: u32, h: u32, seed: u8) -> PathBuf {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x as u8).wrapping_mul(seed),
                (y as u8).wrapping_add(seed),
                seed,
            ])
        });
        let path = dir.join(name);
        img.save(&path).unwrap();
        path
    }

    #[test]
    fn planes_round_trip_and_fit_matches_the_in_memory_reader() {
        let planes: Vec<u8> = (0..3 * 4 * 5).map(|v| v as u8).collect();
        let o = Original::from_planes(&planes, [3, 4, 5]);
        assert_eq!(o.dimensions(), (5, 4));
        assert_eq!(o.fit([3, 4, 5], Resize::Stretch), planes);
        assert_eq!(o.crop_resized((0, 0, 5, 4), [3, 4, 5]), planes);
        // The window's top-left pixel of each plane.
        let part = o.crop_resized((1, 2, 2, 2), [3, 2, 2]);
        assert_eq!([part[0], part[4], part[8]], [11, 31, 51]);
        let g = Original::from_planes(&planes[..20], [1, 4, 5]);
        assert_eq!(g.fit([1, 4, 5], Resize::Stretch), &planes[..20]);
    }

    #[test]
    fn prefetched_and_direct_decodes_agree_and_the_store_empties() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..6)
            .map(|k| photo(dir.path(), &format!("{k}.png"), 40 + k, 30, k as u8 + 1))
            .collect();
        let shape = [3, 16, 16];
        let direct = Photos::new(paths.clone(), shape, Resize::ShorterSide(24), 0);
        let ahead = Photos::new(paths, shape, Resize::ShorterSide(24), 2);
        let wait = |photos: &Photos, n: usize| {
            for _ in 0..500 {
                if photos.shared.ahead.lock().unwrap().images.len() == n {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("the workers did not decode {n} photos");
        };
        ahead.prefetch(&[0, 1, 2, 3, 4, 5], Want::Fitted);
        wait(&ahead, 6);
        for i in 0..6 {
            assert_eq!(direct.fitted(i).unwrap(), ahead.fitted(i).unwrap());
        }
        ahead.prefetch(&[1, 2], Want::Original);
        wait(&ahead, 2);
        // Asked as the other kind, the photo is decoded anew and the same.
        assert_eq!(ahead.fitted(1).unwrap(), direct.fitted(1).unwrap());
        assert_eq!(
            ahead.original(2).unwrap().dimensions(),
            direct.original(2).unwrap().dimensions()
        );
        let left = ahead.shared.ahead.lock().unwrap();
        assert_eq!(left.images.len(), 1);
        drop(left);
        ahead.original(1).unwrap();
        let left = ahead.shared.ahead.lock().unwrap();
        assert_eq!((left.images.len(), left.bytes), (0, 0));
    }

    #[test]
    fn the_store_keeps_its_bound_oldest_out_first() {
        let mut a = Ahead::default();
        let big = Arc::new(Original::Gray(GrayImage::new(1 << 14, 1 << 12)));
        for i in 0..5 {
            a.insert(i, Ready::Original(Arc::clone(&big)));
        }
        assert!(a.bytes <= AHEAD_BYTES);
        assert_eq!(a.images.len(), AHEAD_BYTES / big.bytes());
        assert!(a.take(0, Want::Original).is_none());
        assert!(a.take(4, Want::Fitted).is_none());
        assert!(a.take(4, Want::Original).is_some());
    }

    #[test]
    fn a_photo_that_breaks_after_listing_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = photo(dir.path(), "a.png", 8, 8, 3);
        let photos = Photos::new(vec![p.clone()], [3, 8, 8], Resize::Stretch, 0);
        std::fs::write(&p, b"no longer a png").unwrap();
        let err = format!("{:#}", photos.fitted(0).unwrap_err());
        assert!(
            err.contains("a.png") && err.contains("data.cache \"memory\""),
            "{err}"
        );
    }
}
