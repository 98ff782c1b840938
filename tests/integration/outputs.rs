//! The output-file policy (`src/output.rs`), against every command that
//! writes a file a user names: only regular files are written, an existing
//! one only with `--force`, a run directory's own files never, and no
//! temporary file is left behind. (Found by the hardening probe: as root,
//! `cnn export -o /dev/null --force` replaced the machine's /dev/null with a
//! regular file.) The device node here is a private one made with mknod,
//! never the machine's own.

use crate::common::*;
use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// LeNet for one epoch on 300 images: a run directory with checkpoints.
fn lenet_run(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    let (code, _, err) = run(cnn(dir)
        .args(["train", "--quiet", "--epochs", "1", "--limit-train", "300"])
        .args([
            "--set",
            "data.val_size=100",
            "--limit-test",
            "100",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("lenet.json"))
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    out
}

/// Every writer, as the arguments that make it write `out`.
fn writers(run: &Path) -> Vec<(&'static str, Vec<OsString>)> {
    let ck = run.join("best.safetensors");
    let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        v.iter().map(|a| a.as_ref().to_os_string()).collect()
    };
    vec![
        ("export", os(&[&"export", &"--checkpoint", &ck, &"-o"])),
        ("plot", os(&[&"plot", &run, &"-o"])),
        ("filters", os(&[&"filters", &"--checkpoint", &ck, &"-o"])),
        (
            "feature-maps",
            os(&[
                &"feature-maps",
                &"--index",
                &"0",
                &"--checkpoint",
                &ck,
                &"-o",
            ]),
        ),
        (
            "samples",
            os(&[&"samples", &"--data-dir", &mnist_small(), &"-o"]),
        ),
        (
            "eval --confusion-png",
            os(&[&"eval", &"--checkpoint", &ck, &"--confusion-png"]),
        ),
        (
            "eval --mistakes-png",
            os(&[&"eval", &"--checkpoint", &ck, &"--mistakes-png"]),
        ),
        ("report --csv", os(&[&"report", &run, &"--csv"])),
        ("report --plot", os(&[&"report", &run, &"--plot"])),
        (
            "lr-find --plot",
            os(&[
                &"lr-find",
                &"--config",
                &config_path("lenet.json"),
                &"--data-dir",
                &mnist_small(),
                &"--steps",
                &"20",
                &"--plot",
            ]),
        ),
    ]
}

/// What the target is before and after: a kind and, for a file, its bytes.
fn what(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Err(_) => "nothing".into(),
        Ok(m) if m.file_type().is_fifo() => "fifo".into(),
        Ok(m) if m.file_type().is_char_device() => "char device".into(),
        Ok(m) if m.is_dir() => "dir".into(),
        Ok(_) => format!("file {:?}", std::fs::read(path).unwrap()),
    }
}

fn no_temporaries(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left in {}: {left:?}",
        dir.display()
    );
}

fn mknod(path: &Path, kind: u32, dev: libc::dev_t) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mknod(2) with a NUL-terminated path in the test's own folder.
    unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) == 0 }
}

#[test]
fn every_writer_writes_only_regular_files_and_never_over_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = lenet_run(tmp.path());
    let targets = tmp.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let fifo = targets.join("fifo.png");
    assert!(mknod(&fifo, libc::S_IFIFO, 0));
    // A character device (1, 3: what /dev/null is) of our own; only root may
    // make one.
    let device = targets.join("device.png");
    let have_device = mknod(&device, libc::S_IFCHR, libc::makedev(1, 3));
    let folder = targets.join("folder.png");
    std::fs::create_dir(&folder).unwrap();
    let existing = targets.join("existing.png");
    std::fs::write(&existing, b"keep me").unwrap();
    let slash = PathBuf::from(format!("{}/missing/", targets.display()));

    for (name, args) in writers(&run_dir) {
        let mut cases: Vec<(&Path, &str, bool)> = vec![
            (&fifo, "a FIFO", true),
            (&folder, "is a directory", true),
            (&slash, "names a folder", true),
            (&existing, "already exists", false),
        ];
        if have_device {
            cases.push((&device, "a character device", true));
        }
        for (target, needle, force) in cases {
            let before = what(target);
            let mut cmd = cnn(tmp.path());
            cmd.args(&args).arg(target);
            if force {
                cmd.arg("--force");
            }
            let err = assert_usage_error(&mut cmd, &[needle]);
            assert_eq!(
                what(target),
                before,
                "{name} changed {}: {err}",
                target.display()
            );
            no_temporaries(&targets);
        }
    }

    // A run's own files, even with --force; the run is unchanged.
    let before: Vec<(PathBuf, String)> = [
        "best.safetensors",
        "last.safetensors",
        "config.json",
        "history.json",
        "history.csv",
        "status.json",
    ]
    .iter()
    .map(|f| (run_dir.join(f), what(&run_dir.join(f))))
    .collect();
    for (name, args) in writers(&run_dir) {
        for (target, _) in &before {
            let mut cmd = cnn(tmp.path());
            cmd.args(&args).arg(target).arg("--force");
            let err = assert_usage_error(&mut cmd, &[]);
            assert!(
                err.contains("never overwrites a run's own files")
                    || err.contains("is the checkpoint being exported"),
                "{name} -> {}: {err}",
                target.display()
            );
        }
    }
    for (path, was) in &before {
        assert_eq!(&what(path), was, "{} changed", path.display());
    }
    no_temporaries(&run_dir);

    // What is allowed: a new file, and an existing one with --force.
    let (code, _, err) = run(cnn(tmp.path())
        .args(["report"])
        .arg(&run_dir)
        .arg("--csv")
        .arg(&existing)
        .arg("--force"));
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(&existing)
            .unwrap()
            .starts_with("run,")
    );
    no_temporaries(&targets);
}
