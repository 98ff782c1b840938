//! `cnn predict` at serving scale: folders searched recursively, names from
//! standard input, batches of any size giving the same answers in input
//! order, JSON lines that arrive while a slow producer is still writing
//! names, and clear refusals.

use crate::common::*;
use crate::visual::trained;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

/// The first `n` test digits as 28×28 PNG files: the first half in
/// `dir/a/`, the rest in `dir/b/c/`, with a file that is not an image.
fn digits(dir: &Path, n: usize) -> Vec<PathBuf> {
    let (_, _, test, _) = mnist_arrays();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b/c")).unwrap();
    std::fs::write(dir.join("a/notes.txt"), "not an image").unwrap();
    (0..n)
        .map(|i| {
            let sub = if i < n / 2 { "a" } else { "b/c" };
            let p = dir.join(sub).join(format!("{i:04}.png"));
            image::GrayImage::from_raw(28, 28, test[i * 784..(i + 1) * 784].to_vec())
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect()
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn paths(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

/// The same classes and nearly the same probabilities, in the same order.
fn assert_same_answers(a: &[Value], b: &[Value]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["class"], y["class"], "{x} / {y}");
        let (p, q) = (
            x["top"][0]["probability"].as_f64().unwrap(),
            y["top"][0]["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-5, "{x} / {y}");
    }
}

#[test]
fn folders_lists_and_stdin_give_the_same_answers_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = trained().join("best.safetensors");
    let files = digits(&d.join("digits"), 120);
    let predict = |args: &[&str]| {
        let mut cmd = cnn(d);
        cmd.args(["predict", "--preprocess", "stretch", "--checkpoint"])
            .arg(&ck)
            .args(args);
        cmd
    };

    // The files one by one on the command line, in one --json array.
    let (code, out, err) = run(predict(&["--json"]).args(&files));
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(paths(&listed), names);

    // The folder, recursively and in name order (notes.txt left out), in
    // batches of 7: one JSON object per line, the same answers.
    let folder = d.join("digits").display().to_string();
    let (code, out, err) = run(&mut predict(&["--jsonl", "--batch-size", "7", &folder]));
    assert_eq!(code, 0, "{err}");
    let streamed = lines(&out);
    assert_eq!(paths(&streamed), names);
    assert_same_answers(&streamed, &listed);

    // Names from standard input, between a file and a folder.
    let stdin = names[10..20].join("\n") + "\n\n";
    let (code, out, err) = run(predict(&["--jsonl", "--batch-size", "4"])
        .arg(&files[0])
        .arg("-")
        .arg(d.join("digits/a"))
        .write_stdin(stdin));
    assert_eq!(code, 0, "{err}");
    let mixed = lines(&out);
    let expected: Vec<String> = std::iter::once(names[0].clone())
        .chain(names[10..20].iter().cloned())
        .chain(names[..60].iter().cloned())
        .collect();
    assert_eq!(paths(&mixed), expected);
    assert_same_answers(&mixed[1..11], &listed[10..20]);

    // The text output streams too, a line per image.
    let (code, out, err) = run(&mut predict(&["--batch-size", "50", &folder]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 120);
    assert!(out.starts_with(&format!("{}: ", names[0])), "{out}");
}

#[test]
fn answers_arrive_while_the_producer_is_still_writing_names() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    let files = digits(dir.path(), 3);
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("cnn"))
        .args(["predict", "--jsonl", "--checkpoint"])
        .arg(&ck)
        .arg("-")
        .env("RAYON_NUM_THREADS", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // One name at a time: each answer comes before the next name is sent
    // (the batch size is 256), and the input stays open until the end.
    for f in &files {
        writeln!(stdin, "{}", f.display()).unwrap();
        stdin.flush().unwrap();
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no answer for {} while input is open", f.display()));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], f.display().to_string());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_inputs_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = trained().join("best.safetensors");
    let files = digits(&d.join("digits"), 6);
    let predict = || {
        let mut cmd = cnn(d);
        cmd.args(["predict", "--checkpoint"]).arg(&ck);
        cmd
    };
    assert_usage_error(
        predict().args(["--batch-size", "0"]).arg(&files[0]),
        &["--batch-size 0"],
    );
    assert_usage_error(predict().args(["-", "-"]), &["`-`", "twice"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join("empty/readme.txt"), "no images").unwrap();
    assert_usage_error(
        predict().arg(d.join("empty")),
        &["empty", "holds no images", "png"],
    );
    assert_usage_error(
        predict().args(["--json", "--jsonl"]).arg(&files[0]),
        &["--jsonl"],
    );
    // An unreadable image is reported in its place, naming it, and the
    // others are still classified; the exit code says some failed.
    let broken = d.join("digits/a/0001.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let (code, out, err) = run(predict()
        .args(["--jsonl", "--batch-size", "1"])
        .arg(d.join("digits")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1 of 6 images could not be read"), "{err}");
    let rows = lines(&out);
    assert_eq!(rows.len(), 6, "{out}");
    assert_eq!(
        paths(&rows),
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    );
    let bad = rows[1]["error"].as_str().unwrap();
    assert!(
        bad.contains("0001.png") && bad.contains("not an image"),
        "{bad}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.get("error").is_none())
            .all(|r| r["top"].is_array())
    );
    // --json gives the same rows as one array; text names the file on
    // standard error and prints the other five.
    let (code, out, err) = run(predict().arg("--json").arg(d.join("digits")));
    assert_eq!(code, 2, "{err}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(paths(&all), paths(&rows));
    assert_eq!(all[1], rows[1]);
    let ok = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .filter(|r| r.get("error").is_none())
            .cloned()
            .collect()
    };
    // (Batches of 1 and of 6 may differ in the last bit.)
    assert_same_answers(&ok(&all), &ok(&rows));
    let (code, out, err) = run(predict().arg(d.join("digits")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("0001.png") && err.contains("not an image"),
        "{err}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");
}

/// Odd file names (not UTF-8, with a newline, with a tab, unicode) given as
/// arguments, found in a folder and read from standard input, at every
/// batch size from 1 to absurd: never a panic or an abort; each image is
/// classified and named, a non-UTF-8 name with its bytes beside it.
#[test]
fn predict_takes_any_file_name_and_any_batch_size() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    let (_, _, test, _) = mnist_arrays();
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let names: Vec<&[u8]> = vec![
        b"plain.png",
        b"caf\xc3\xa9 \xe2\x9c\x93.png",
        b"latin1-\xe9\xff.png",
        b"new\nline.png",
        b"tab\there.png",
        b"-starts-with-dash.png",
    ];
    let files: Vec<PathBuf> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = odd.join(std::ffi::OsStr::from_bytes(n));
            image::GrayImage::from_raw(28, 28, test[i * 784..(i + 1) * 784].to_vec())
                .unwrap()
                .save_with_format(&p, image::ImageFormat::Png)
                .unwrap();
            p
        })
        .collect();
    for batch in ["1", "4", "1000000000000", "18446744073709551615"] {
        for form in ["--json", "--jsonl"] {
            // The folder, and every file by name.
            let mut cmd = cnn(dir.path());
            cmd.args(["predict", form, "--batch-size", batch, "--checkpoint"])
                .arg(&ck)
                .arg(&odd)
                .arg("--")
                .args(&files);
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert_eq!(out.status.code(), Some(0), "batch {batch} {form}: {stderr}");
            let text = String::from_utf8(out.stdout).unwrap();
            let rows: Vec<Value> = if form == "--json" {
                serde_json::from_str(&text).unwrap()
            } else {
                lines(&text)
            };
            assert_eq!(rows.len(), 2 * files.len(), "{text}");
            let lossy: Vec<&Value> = rows
                .iter()
                .filter(|r| r.get("path_bytes").is_some())
                .collect();
            assert_eq!(lossy.len(), 2, "the latin-1 name, twice: {text}");
            let bytes: Vec<u8> = lossy[0]["path_bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            assert!(bytes.ends_with(b"latin1-\xe9\xff.png"), "{bytes:?}");
            assert!(rows.iter().all(|r| r["class"].is_u64()), "{text}");
        }
    }
    // Names from standard input, one per line (all but the one holding a
    // newline, which a line cannot carry).
    let mut input = Vec::new();
    for f in files
        .iter()
        .filter(|f| !f.as_os_str().as_bytes().contains(&b'\n'))
    {
        input.extend_from_slice(f.as_os_str().as_bytes());
        input.push(b'\n');
    }
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("cnn"))
        .current_dir(dir.path())
        .args(["predict", "--jsonl", "--checkpoint"])
        .arg(&ck)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        lines(&String::from_utf8(out.stdout).unwrap()).len(),
        files.len() - 1
    );
}
