//! `cnn train --distributed mpi`: one run over several processes under
//! Open MPI's `mpirun`, on real MNIST and CIFAR-10 subsets. Without batch
//! norm, N ranks write the same bits as one process; a killed rank ends the
//! job and the run resumes exactly; bad starts are refused by name. Built
//! only with `--features mpi` (the CI runs them); without it, the flag's
//! message is tested instead.

use crate::common::*;

#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_mpi_feature_the_flag_says_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--distributed", "mpi", "--config"])
            .arg(config_path("lenet.json")),
        &["--features mpi", "libopenmpi-dev"],
    );
}

#[test]
fn nccl_is_refused_with_what_to_use_instead() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--distributed", "nccl", "--config"])
            .arg(config_path("lenet.json")),
        &["--distributed nccl", "no NCCL engine", "--distributed mpi"],
    );
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// LeNet with a dropout layer (so the ranks must draw each
    /// micro-batch's masks from its own stream, as one process does), and a
    /// batch of 96: three micro-batches of 32, which 2 ranks share unevenly;
    /// 2,700 training images leave a last batch of 12 (one micro-batch: the
    /// other ranks idle).
    fn dropout_lenet(dir: &Path) -> PathBuf {
        let mut c = shipped("lenet.json");
        let layers = c["layers"].as_array_mut().unwrap();
        layers.insert(
            layers.len() - 1,
            serde_json::json!({"type": "dropout", "p": 0.3}),
        );
        c["training"]["batch_size"] = 96.into();
        c["data"]["val_size"] = 0.1.into();
        c["data"]["limit_test"] = 200.into();
        write_config(dir, "lenet-dropout.json", &c)
    }

    /// `mpirun -n RANKS cnn ARGS` in `dir`, one thread per rank, allowed to
    /// run as root (the CI's containers), its output in `dir/<log>.log`.
    fn mpirun(dir: &Path, ranks: usize, args: &[String], log: &str) -> Child {
        let out = std::fs::File::create(dir.join(format!("{log}.log"))).unwrap();
        let mut c = Command::new("mpirun");
        c.current_dir(dir)
            .args(["-n", &ranks.to_string(), "--oversubscribe"])
            .arg(assert_cmd::cargo::cargo_bin("cnn"))
            .args(args);
        env(&mut c);
        c.stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    fn env(c: &mut Command) {
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
            .env("RAYON_NUM_THREADS", "1")
            .env_remove("CNN_DATA_DIR")
            .env("HF_HUB_OFFLINE", "1");
    }

    /// Waits at most two minutes: (exit code, the log).
    fn finish(mut child: Child, dir: &Path, log: &str) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(120) {
                child.kill().unwrap();
                panic!(
                    "mpirun hangs:\n{}",
                    std::fs::read_to_string(dir.join(format!("{log}.log"))).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(dir.join(format!("{log}.log"))).unwrap();
        assert!(!text.contains("panicked"), "panic:\n{text}");
        (status.code().unwrap_or(-1), text)
    }

    fn train_args(config: &Path, data: &Path, out: &str, more: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["train", "--distributed", "mpi", "--config"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(config.display().to_string());
        a.extend([
            "--data-dir".into(),
            data.display().to_string(),
            "--out".into(),
            out.into(),
        ]);
        a.extend(more.iter().map(|s| s.to_string()));
        a
    }

    fn steps_csv(run: &Path) -> String {
        std::fs::read_to_string(run.join("steps.csv")).unwrap()
    }

    /// One process's run of `config` (two threads): the reference.
    fn one_process(dir: &Path, config: &Path, out: &str, more: &[&str]) {
        let (code, _, err) = run(cnn(dir)
            .args(["train", "--quiet", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(mnist_small())
            .args(["--out", out])
            .args(more));
        assert_eq!(code, 0, "{err}");
    }

    #[test]
    fn two_and_three_ranks_write_the_same_bits_as_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = dropout_lenet(d);
        one_process(d, &config, "one", &["--epochs", "2"]);
        for ranks in [2, 3] {
            let out = format!("ranks{ranks}");
            let args = train_args(&config, &mnist_small(), &out, &["--epochs", "2"]);
            let (code, log) = finish(mpirun(d, ranks, &args, &out), d, &out);
            assert_eq!(code, 0, "{log}");
            assert!(
                log.contains(&format!("distributed over {ranks} ranks")),
                "{log}"
            );
            let run = d.join(&out);
            assert_eq!(
                tensors(&d.join("one")),
                tensors(&run),
                "{ranks} ranks: other weights"
            );
            assert_eq!(steps_csv(&d.join("one")), steps_csv(&run));
            assert_eq!(
                history_without_timing(&d.join("one")),
                history_without_timing(&run)
            );
            // One writer: one line per epoch, one summary.
            assert_eq!(log.matches("epoch 2/2: train").count(), 1, "{log}");
            let state = cnn::checkpoint::load(&run.join("last.safetensors")).unwrap();
            assert_eq!(state.meta.state.unwrap().ranks, Some(ranks));
        }
    }

    /// The pids of the ranks of the run writing `out` (found by their MPI
    /// rank in their environment).
    fn rank_pid(out: &Path, rank: usize) -> Option<i32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
            if has(&cmdline, out.to_string_lossy().as_bytes())
                && environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
            {
                return Some(pid);
            }
        }
        None
    }

    #[test]
    fn a_rank_killed_ends_the_job_and_the_run_resumes_exactly_on_two_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = dropout_lenet(d);
        let epochs = ["--epochs", "4", "--checkpoint-every", "10"];
        one_process(d, &config, "one", &epochs);
        let run = d.join("killed");
        let args = train_args(&config, &mnist_small(), &run.display().to_string(), &epochs);
        let mut child = mpirun(d, 2, &args, "killed");
        wait_for_step(&mut child, &run, 20);
        let pid = rank_pid(&run, 1).expect("rank 1 is running");
        // SAFETY: a plain kill(2) of a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let killed_at = Instant::now();
        let (code, log) = finish(child, d, "killed");
        assert_ne!(code, 0, "{log}");
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the job outlived its rank"
        );
        assert!(
            log.contains("signal 9"),
            "mpirun says what happened:\n{log}"
        );
        let saved = saved_step(&run);
        assert!(saved >= 20, "the last checkpoint is whole and loads");
        // Resumed on as many ranks: as if never stopped.
        let resume: Vec<String> = ["train", "--distributed", "mpi", "--resume"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                run.display().to_string(),
                "--data-dir".into(),
                mnist_small().display().to_string(),
            ])
            .collect();
        let (code, log) = finish(mpirun(d, 2, &resume, "resumed"), d, "resumed");
        assert_eq!(code, 0, "{log}");
        assert!(log.contains(&format!("step {saved} of the run")), "{log}");
        assert_eq!(tensors(&d.join("one")), tensors(&run));
        assert_eq!(steps_csv(&d.join("one")), steps_csv(&run));
        assert_eq!(
            history_without_timing(&d.join("one")),
            history_without_timing(&run)
        );
    }

    #[test]
    fn batch_norm_runs_repeat_on_as_many_ranks_and_resume_only_on_as_many() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cifar = repo().join("tests/fixtures/cifar10-small");
        let config = config_path("cifar10-cnn.json");
        // 90 training images: batches of 32, 32 and 26, each rank's share
        // normalised by its own statistics.
        let more = [
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--set",
            "data.val_size=0.1",
        ];
        let mut runs = Vec::new();
        for name in ["bn-a", "bn-b"] {
            let args = train_args(&config, &cifar, name, &more);
            let (code, log) = finish(mpirun(d, 2, &args, name), d, name);
            assert_eq!(code, 0, "{log}");
            runs.push(tensors(&d.join(name)));
        }
        assert_eq!(runs[0], runs[1], "two runs on 2 ranks differ");
        let (code, _, err) = run(cnn(d)
            .args(["train", "--resume", "bn-a", "--epochs", "2", "--data-dir"])
            .arg(&cifar));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("trained on 2 rank(s) and this is 1"), "{err}");
        assert!(
            err.contains("batch-norm statistics are computed per rank"),
            "{err}"
        );
        assert!(
            err.contains("mpirun -n 2 cnn train --distributed mpi --resume bn-a"),
            "{err}"
        );
        let resume: Vec<String> = [
            "train",
            "--distributed",
            "mpi",
            "--resume",
            "bn-a",
            "--epochs",
            "2",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([cifar.display().to_string()])
        .collect();
        let (code, log) = finish(mpirun(d, 2, &resume, "bn-resumed"), d, "bn-resumed");
        assert_eq!(code, 0, "{log}");
        assert!(log.contains("epoch 2/2"), "{log}");
    }

    #[test]
    fn bad_starts_are_refused_naming_the_setting_or_the_rank() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = dropout_lenet(d);
        let data = mnist_small();
        let refused = |ranks: usize, args: Vec<String>, log: &str, needles: &[&str]| {
            let (code, text) = finish(mpirun(d, ranks, &args, log), d, log);
            assert_eq!(code, 2, "{text}");
            for n in needles {
                assert!(text.contains(n), "lacks {n:?}:\n{text}");
            }
        };
        refused(
            2,
            train_args(&config, &data, "odd", &["--batch-size", "63"]),
            "odd",
            &[
                "training.batch_size is 63",
                "2 ranks cannot share evenly",
                "--batch-size 64",
            ],
        );
        refused(
            3,
            train_args(&config, &data, "small", &["--batch-size", "48"]),
            "small",
            &["2 micro-batch(es) of about 32", "at least 96 images"],
        );
        // Ranks started with different settings or data (MPMD: one
        // command line per rank).
        let mpmd = |name: &str, rank1: Vec<String>| -> Vec<String> {
            let mut a = train_args(&config, &data, name, &[]);
            a.push(":".into());
            a.extend(["-n".into(), "1".into()]);
            a.push(assert_cmd::cargo::cargo_bin("cnn").display().to_string());
            a.extend(rank1);
            a
        };
        let other_lr = train_args(&config, &data, "lr", &["--lr", "0.01"]);
        let args = mpmd("lr", other_lr);
        let (code, text) = finish(mpirun(d, 1, &args, "lr"), d, "lr");
        assert_eq!(code, 2, "{text}");
        assert!(text.contains("rank 1 of 2 has other settings"), "{text}");
        let copy = d.join("mnist-other");
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(&data).unwrap().flatten() {
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        // The same labels and number of images, one image changed.
        let (mut train, labels, _, _) = mnist_arrays();
        train[28 * 14 + 14] = train[28 * 14 + 14].wrapping_add(99);
        write_idx_images(
            &copy.join("train-images-idx3-ubyte.gz"),
            &train,
            labels.len(),
        );
        let args = mpmd("data", train_args(&config, &copy, "data", &[]));
        let (code, text) = finish(mpirun(d, 1, &args, "data"), d, "data");
        assert_eq!(code, 2, "{text}");
        assert!(
            text.contains("rank 1 of 2 has other training images"),
            "{text}"
        );
        for name in ["odd", "small", "lr", "data"] {
            assert!(
                !d.join(name).exists(),
                "{name}: a refused start left a run directory"
            );
        }
    }

    /// MNIST's IDX image file, gzipped.
    fn write_idx_images(path: &Path, pixels: &[u8], n: usize) {
        use std::io::Write;
        let mut bytes = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(pixels);
        let file = std::fs::File::create(path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        gz.finish().unwrap();
    }

    #[test]
    fn a_sweep_point_can_be_a_two_rank_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = dropout_lenet(d);
        let sweep = d.join("sweep");
        let mut c = Command::new("bash");
        c.current_dir(d)
            .arg(repo().join("scripts/sweep.sh"))
            .arg("--base")
            .arg(&config)
            .arg("--out")
            .arg(&sweep)
            .args([
                "-n",
                "2",
                "--threads",
                "1",
                "training.optimizer.lr=0.001,0.002",
                "--",
            ])
            .arg("--data-dir")
            .arg(mnist_small())
            .args(["--epochs", "1"])
            .env("CNN", assert_cmd::cargo::cargo_bin("cnn"))
            .stdin(Stdio::null());
        env(&mut c);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(sweep.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["train"]["distributed"], "mpi", "{manifest}");
        for (lr, name) in [("0.001", "lr=0.001"), ("0.002", "lr=0.002")] {
            let log =
                std::fs::read_to_string(sweep.join("logs").join(format!("{name}.log"))).unwrap();
            assert!(log.contains("distributed over 2 ranks"), "{log}");
            assert!(
                log.contains("mpirun -n 2"),
                "the log shows the launcher:\n{log}"
            );
            one_process(d, &config, name, &["--epochs", "1", "--lr", lr]);
            assert_eq!(
                tensors(&d.join(name)),
                tensors(&sweep.join("runs").join(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn without_a_launcher_the_run_says_it_is_alone_and_trains() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = dropout_lenet(d);
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("cnn"));
        c.current_dir(d)
            .args(train_args(
                &config,
                &mnist_small(),
                "alone",
                &["--epochs", "1"],
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        env(&mut c);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("the job's only rank"), "{err}");
        assert!(err.contains("trains alone"), "{err}");
        one_process(d, &config, "one", &["--epochs", "1"]);
        assert_eq!(tensors(&d.join("one")), tensors(&d.join("alone")));
    }
}
