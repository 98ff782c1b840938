//! Image folders in torchvision's ImageFolder layout: `root/<class>/…/*.png`
//! (also `.jpg`, `.jpeg`, `.bmp`, `.pgm`, `.ppm`, `.pnm`, `.pbm`). The class
//! names are the sorted sub-folder names and a class's label is its index
//! in that list. Every image is decoded once, converted to grayscale or RGB
//! as the config's `input_shape[0]` says, resized to its height × width and
//! kept as bytes.
//!
//! Resizing uses the `image` crate's `Triangle` filter: bilinear when
//! enlarging, and averaging over the footprint of each output pixel when
//! shrinking, so large photos do not alias. Aspect ratios are not kept (an
//! image is stretched to the input shape), as with torchvision's
//! `Resize((h, w))`. Transparency is dropped (RGB/grayscale of the colour).

use super::ImageSet;
use crate::config::OnBadImage;
use crate::error::InputContext;
use anyhow::Result;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions read as images (compared without case).
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "pgm", "ppm", "pnm", "pbm"];

/// How many unreadable files a message names before "and N more".
const NAMED: usize = 5;

/// The images of one folder tree, with what was noticed on the way.
#[derive(Debug)]
pub struct Folder {
    pub set: ImageSet,
    /// Unreadable files left out (`data.on_bad_image = "skip"`), with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Images whose size was not the input size, and one example.
    pub resized: usize,
    pub resized_example: Option<(PathBuf, u32, u32)>,
    /// Files under the class folders that are not images by extension.
    pub ignored: usize,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The sorted class sub-folder names of `root`.
pub fn class_folders(root: &Path, what: &str) -> Result<Vec<String>> {
    if !root.is_dir() {
        let state = if root.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        crate::bail_input!(
            "{what} {} {state}; it should hold one sub-folder per class, e.g. {}/cat/001.png",
            root.display(),
            root.display()
        );
    }
    let mut classes = Vec::new();
    let mut loose_images = 0;
    for entry in std::fs::read_dir(root)
        .input_context(|| format!("cannot list {what} {}", root.display()))?
    {
        let entry = entry.input_context(|| format!("cannot list {what} {}", root.display()))?;
        let path = entry.path();
        if hidden(&path) {
            continue;
        }
        if path.is_dir() {
            match entry.file_name().into_string() {
                Ok(name) => classes.push(name),
                Err(name) => crate::bail_input!(
                    "class folder {} has a name that is not valid UTF-8 ({name:?}); rename it",
                    path.display()
                ),
            }
        } else if is_image(&path) {
            loose_images += 1;
        }
    }
    if classes.is_empty() {
        let loose = if loose_images > 0 {
            format!(
                " It holds {loose_images} image(s) directly; move them into one sub-folder per class."
            )
        } else {
            String::new()
        };
        crate::bail_input!(
            "{what} {} has no class sub-folders; it needs one per class, e.g. {}/cat/001.png.{loose}",
            root.display(),
            root.display()
        );
    }
    classes.sort();
    Ok(classes)
}

/// Image files under `dir`, recursively, sorted; and the count of other files.
pub fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let mut files = Vec::new();
    let mut ignored = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).input_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry
                .input_context(|| format!("cannot list {}", d.display()))?
                .path();
            if hidden(&path) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                files.push(path);
            } else {
                ignored += 1;
            }
        }
    }
    files.sort();
    Ok((files, ignored))
}

/// Reads `root/<class>/…` for each of `present` (sub-folders of `root`),
/// labelling each image with the index of its class in `classes`: every
/// image decoded into memory at `shape`, or (`streamed: Some(workers)`)
/// kept as its file (`data.cache: "none"`), only checked now (its declared
/// size) and decoded when used, `workers` threads decoding ahead.
pub fn read_as(
    root: &Path,
    present: &[String],
    classes: &[String],
    shape: [usize; 3],
    on_bad: OnBadImage,
    resize: crate::config::Resize,
    streamed: Option<usize>,
) -> Result<Folder> {
    let mut files: Vec<(PathBuf, u16)> = Vec::new();
    let mut ignored = 0;
    for name in present {
        let Some(label) = classes.iter().position(|c| c == name) else {
            crate::bail_input!(
                "{} is not one of the classes {}; remove it or rename it to one of them",
                root.join(name).display(),
                classes.join(", ")
            );
        };
        let dir = root.join(name);
        let (found, other) = image_files(&dir)?;
        if found.is_empty() {
            crate::bail_input!(
                "class folder {} has no images ({}); add images or remove the folder",
                dir.display(),
                EXTENSIONS.join(", ")
            );
        }
        ignored += other;
        files.extend(found.into_iter().map(|f| (f, label as u16)));
    }

    let [c, h, w] = shape;
    let decoded: Vec<Result<Decoded, String>> = files
        .par_iter()
        .map(|(p, _)| match streamed {
            None => decode(p, shape, resize),
            Some(_) => super::image_file::dimensions_or_why(p).map(|(ow, oh)| Decoded {
                pixels: Vec::new(),
                resized_from: (ow as usize != w || oh as usize != h).then_some((ow, oh)),
            }),
        })
        .collect();
    let mut set = ImageSet {
        channels: c,
        height: h,
        width: w,
        pixels: Vec::with_capacity(if streamed.is_some() {
            0
        } else {
            files.len() * c * h * w
        }),
        labels: Vec::with_capacity(files.len()),
        files: None,
    };
    let mut folder = Folder {
        set: set.empty_like(),
        skipped: Vec::new(),
        resized: 0,
        resized_example: None,
        ignored,
    };
    let mut kept = Vec::new();
    for ((path, label), result) in files.into_iter().zip(decoded) {
        match result {
            Ok(d) => {
                if let Some((ow, oh)) = d.resized_from {
                    folder.resized += 1;
                    folder.resized_example.get_or_insert((path.clone(), ow, oh));
                }
                set.pixels.extend_from_slice(&d.pixels);
                set.labels.push(label);
                if streamed.is_some() {
                    kept.push(path);
                }
            }
            Err(why) => folder.skipped.push((path, why)),
        }
    }
    if !folder.skipped.is_empty() && on_bad == OnBadImage::Fail {
        let (path, why) = &folder.skipped[0];
        let more = match folder.skipped.len() - 1 {
            0 => String::new(),
            n => format!(" ({n} more unreadable: {})", list(&folder.skipped[1..])),
        };
        crate::bail_input!(
            "cannot read image {}: {why}{more}. Fix or remove the file, or set data.on_bad_image to \
             \"skip\" to leave unreadable images out",
            path.display()
        );
    }
    for (label, name) in classes.iter().enumerate() {
        if present.contains(name) && !set.labels.contains(&(label as u16)) {
            crate::bail_input!(
                "class folder {} has no readable images left after skipping unreadable ones; fix them or \
                 remove the folder",
                root.join(name).display()
            );
        }
    }
    if let Some(workers) = streamed {
        set.files = Some(std::sync::Arc::new(super::photos::Photos::new(
            kept, shape, resize, workers,
        )));
    }
    folder.set = set;
    Ok(folder)
}

/// `a.png (why), b.png (why) and 3 more`.
pub fn list(items: &[(PathBuf, String)]) -> String {
    let mut parts: Vec<String> = items
        .iter()
        .take(NAMED)
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect();
    if items.len() > NAMED {
        parts.push(format!("and {} more", items.len() - NAMED));
    }
    parts.join(", ")
}

struct Decoded {
    pixels: Vec<u8>,
    /// The original width × height when it was not the input size.
    resized_from: Option<(u32, u32)>,
}

/// Decodes one file (format from its content, else its extension) into
/// `c×h×w` bytes.
fn decode(
    path: &Path,
    shape: [usize; 3],
    resize: crate::config::Resize,
) -> Result<Decoded, String> {
    let img = super::image_file::open_or_why(path)?;
    let (ow, oh) = (img.width(), img.height());
    let resized_from = (ow as usize != shape[2] || oh as usize != shape[1]).then_some((ow, oh));
    let pixels = super::photos::Original::from_image(&img, shape[0]).fit(shape, resize);
    Ok(Decoded {
        pixels,
        resized_from,
    })
}

/// Interleaved RGB (`h×w×3`) to planes (`3×h×w`).
pub fn hwc_to_chw(rgb: &[u8], plane: usize) -> Vec<u8> {
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[plane + i] = px[1];
        out[2 * plane + i] = px[2];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage};

    fn classes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The folder decoded into memory.
    fn read(
        root: &Path,
        present: &[String],
        classes: &[String],
        shape: [usize; 3],
        on_bad: OnBadImage,
        resize: crate::config::Resize,
    ) -> Result<Folder> {
        read_as(root, present, classes, shape, on_bad, resize, None)
    }

    #[test]
    fn a_folder_of_more_than_256_classes_keeps_every_label_in_memory_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 300 classes, one 3×3 image each, its value the class number % 256.
        let names: Vec<String> = (0..300).map(|k| format!("c{k:03}")).collect();
        for (k, name) in names.iter().enumerate() {
            std::fs::create_dir(root.join(name)).unwrap();
            GrayImage::from_pixel(3, 3, image::Luma([(k % 256) as u8]))
                .save(root.join(name).join("x.png"))
                .unwrap();
        }
        let present = class_folders(root, "image folder").unwrap();
        let shape = [1, 3, 3];
        let memory = read(
            root,
            &present,
            &names,
            shape,
            OnBadImage::Fail,
            Default::default(),
        )
        .unwrap();
        let streamed = read_as(
            root,
            &present,
            &names,
            shape,
            OnBadImage::Fail,
            Default::default(),
            Some(0),
        )
        .unwrap();
        for set in [&memory.set, &streamed.set] {
            assert_eq!(set.labels.len(), 300);
            assert_eq!(set.labels[299], 299);
            assert_eq!(set.pixels_of(299).unwrap()[0], (299 % 256) as u8);
        }
        assert!(streamed.set.pixels.is_empty());
    }

    #[test]
    fn every_format_decodes_and_rgb_planes_are_in_chw_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("a")).unwrap();
        // A 2×1 image: red pixel, then blue.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(1, 0, Rgb([0, 0, 255]));
        for ext in ["png", "bmp", "ppm"] {
            img.save(root.join(format!("a/x.{ext}"))).unwrap();
        }
        image::DynamicImage::ImageRgb8(img.clone())
            .to_luma8()
            .save(root.join("a/y.pgm"))
            .unwrap();
        img.save(root.join("a/z.jpg")).unwrap();
        let present = class_folders(root, "image folder").unwrap();
        let f = read(
            root,
            &present,
            &present,
            [3, 1, 2],
            OnBadImage::Fail,
            crate::config::Resize::Stretch,
        )
        .unwrap();
        assert_eq!(f.set.len(), 5);
        // Sorted: x.bmp, x.png, x.ppm, y.pgm, z.jpg.
        for i in [0, 1, 2] {
            assert_eq!(f.set.image(i), &[255, 0, 0, 0, 0, 255], "image {i}");
        }
        // JPEG is lossy and subsamples colour: red and blue, but no green.
        let jpg = f.set.image(4);
        assert!(
            jpg[0] > 100 && jpg[5] > 100 && jpg[2] < 60 && jpg[3] < 60,
            "{jpg:?}"
        );
        assert_eq!(f.resized, 0);

        // Grayscale: luma of red and blue.
        let g = read(
            root,
            &present,
            &present,
            [1, 1, 2],
            OnBadImage::Fail,
            crate::config::Resize::Stretch,
        )
        .unwrap();
        assert_eq!(g.set.image(0), &[54, 18]);
    }

    #[test]
    fn mixed_sizes_are_resized_to_the_input_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("k")).unwrap();
        GrayImage::from_pixel(8, 8, image::Luma([200]))
            .save(root.join("k/big.png"))
            .unwrap();
        GrayImage::from_pixel(4, 4, image::Luma([100]))
            .save(root.join("k/same.png"))
            .unwrap();
        GrayImage::from_pixel(3, 5, image::Luma([50]))
            .save(root.join("k/small.png"))
            .unwrap();
        let present = classes(&["k"]);
        let f = read(
            root,
            &present,
            &present,
            [1, 4, 4],
            OnBadImage::Fail,
            crate::config::Resize::Stretch,
        )
        .unwrap();
        assert_eq!(f.set.pixels.len(), 3 * 16);
        assert!(f.set.image(0).iter().all(|&p| p == 200));
        assert!(f.set.image(1).iter().all(|&p| p == 100));
        assert!(f.set.image(2).iter().all(|&p| p == 50));
        assert_eq!(f.resized, 2);
        let (p, w, h) = f.resized_example.unwrap();
        assert!(p.ends_with("big.png") && (w, h) == (8, 8));
    }

    #[test]
    fn bad_images_fail_naming_the_file_or_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/nested")).unwrap();
        GrayImage::new(2, 2)
            .save(root.join("a/nested/ok.png"))
            .unwrap();
        std::fs::write(root.join("a/broken.png"), b"not a png").unwrap();
        std::fs::write(root.join("a/notes.txt"), b"ignored").unwrap();
        let present = classes(&["a"]);
        let err = read(
            root,
            &present,
            &present,
            [1, 2, 2],
            OnBadImage::Fail,
            crate::config::Resize::Stretch,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cannot read image") && msg.contains("broken.png"),
            "{msg}"
        );
        assert!(msg.contains("on_bad_image"), "{msg}");
        let f = read(
            root,
            &present,
            &present,
            [1, 2, 2],
            OnBadImage::Skip,
            crate::config::Resize::Stretch,
        )
        .unwrap();
        assert_eq!(f.set.len(), 1);
        assert_eq!(f.skipped.len(), 1);
        assert_eq!(f.ignored, 1);
        // Nothing readable left in a class is an error even when skipping.
        std::fs::remove_file(root.join("a/nested/ok.png")).unwrap();
        let err = read(
            root,
            &present,
            &present,
            [1, 2, 2],
            OnBadImage::Skip,
            crate::config::Resize::Stretch,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no readable images left"));
    }

    #[test]
    fn folder_errors_say_what_layout_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let msg = format!(
            "{:#}",
            class_folders(&root.join("nope"), "image folder").unwrap_err()
        );
        assert!(msg.contains("does not exist"), "{msg}");
        GrayImage::new(2, 2).save(root.join("loose.png")).unwrap();
        let msg = format!("{:#}", class_folders(root, "image folder").unwrap_err());
        assert!(
            msg.contains("no class sub-folders") && msg.contains("1 image(s) directly"),
            "{msg}"
        );
        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        let present = class_folders(root, "image folder").unwrap();
        assert_eq!(present, classes(&["empty"]));
        let msg = format!(
            "{:#}",
            read(
                root,
                &present,
                &present,
                [1, 2, 2],
                OnBadImage::Fail,
                crate::config::Resize::Stretch
            )
            .unwrap_err()
        );
        assert!(msg.contains("empty has no images"), "{msg}");
        let msg = format!(
            "{:#}",
            read(
                root,
                &present,
                &classes(&["x"]),
                [1, 2, 2],
                OnBadImage::Fail,
                crate::config::Resize::Stretch
            )
            .unwrap_err()
        );
        assert!(msg.contains("is not one of the classes x"), "{msg}");
    }
}
