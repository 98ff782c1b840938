//! `training.precision: "bf16"`: the CPU kernels against an f32 reference
//! computed from the same bf16-rounded operands (forward, input and weight
//! gradients) on odd shapes, on every path (`CNN_BF16`); the instruction
//! and its emulation giving the same bits; networks trained in bf16 on real
//! MNIST to fp32's accuracy, the same at any thread count, resuming
//! exactly; and the setting's bad values.

use crate::common::*;
use candle_core::{DType, Device, Tensor, Var};
use cnn::geometry::{ConvGeometry, Pad4, PaddingMode, Pair};
use cnn::ops;
use rand::{Rng, SeedableRng};

fn random(rng: &mut rand_chacha::ChaCha8Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn rounded(t: &Tensor) -> Tensor {
    ops::through_bf16(t).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `|a − b| / |b|` over the whole tensor.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// (n, c, hw, o, k, stride, pad, groups, relu): channel counts that are no
/// multiple of 16, 1×1, 3×3 and 5×5, stride 2, padding, groups; and layers
/// large enough for the bf16 products (32 or more outputs, a depth of 64
/// or more) as well as small ones that keep the f32 kernels.
type Case = (
    usize,
    usize,
    (usize, usize),
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
);
const CASES: &[Case] = &[
    (2, 3, (9, 9), 5, 3, 1, 1, 1, false),
    (3, 1, (28, 28), 6, 5, 1, 2, 1, true),
    (2, 17, (10, 9), 40, 3, 1, 1, 1, false),
    (2, 24, (11, 11), 64, 5, 2, 2, 1, true),
    (3, 33, (7, 7), 48, 1, 1, 0, 1, false),
    (2, 40, (9, 9), 36, 3, 2, 1, 1, false),
    (2, 32, (8, 8), 48, 3, 1, 1, 2, false),
    (2, 70, (6, 5), 96, 3, 1, 0, 1, true),
    (1, 48, (16, 16), 64, 3, 1, 1, 1, false),
];

fn geometry(&(_, c, _, o, k, s, p, g, _): &Case) -> ConvGeometry {
    ConvGeometry {
        in_channels: c,
        out_channels: o,
        kernel: Pair::square(k),
        stride: Pair::square(s),
        dilation: Pair::square(1),
        padding: Pad4::symmetric(Pair::square(p)),
        padding_mode: PaddingMode::Zeros,
        groups: g,
        bias: true,
    }
}

/// Every case: the bf16 convolution (output, input, weight and bias
/// gradients) against candle's f32 convolution of the rounded input and
/// weights with the rounded output gradient; relative error below 1e-5
/// (f32 sums of exact products, in two orders).
#[test]
fn conv_bf16_matches_f32_on_rounded_operands() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(30);
    for case in CASES {
        let &(n, c, (h, w), o, k, _, _, groups, relu) = case;
        let g = geometry(case);
        let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
        let wt = Var::from_tensor(&random(&mut rng, &[o, c / groups, k, k])).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[o])).unwrap();
        let y = ops::conv2d_in(&x, &wt, Some(&b), &g, relu, true).unwrap();
        let dy = random(&mut rng, y.dims());
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        // The reference: rounded leaves, f32 arithmetic.
        let (xr, wr) = (
            Var::from_tensor(&rounded(&x)).unwrap(),
            Var::from_tensor(&rounded(&wt)).unwrap(),
        );
        let br = Var::from_tensor(b.as_tensor()).unwrap();
        let yr = ops::candle_conv2d(&xr, &wr, Some(&br), &g, relu).unwrap();
        let rgrads = (&yr * &rounded(&dy))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let label = format!("{case:?}");
        assert!(rel(&y, &yr) < 1e-5, "{label}: forward {}", rel(&y, &yr));
        for (name, ours, want) in [
            ("input", grads.get(&x), rgrads.get(&xr)),
            ("weight", grads.get(&wt), rgrads.get(&wr)),
            ("bias", grads.get(&b), rgrads.get(&br)),
        ] {
            let (ours, want) = (ours.unwrap(), want.unwrap());
            assert!(
                rel(ours, want) < 1e-5,
                "{label}: {name} gradient {}",
                rel(ours, want)
            );
        }
    }
}

/// A linear layer alike.
#[test]
fn linear_bf16_matches_f32_on_rounded_operands() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    for (n, i, o, relu) in [(5, 7, 3, false), (33, 784, 100, true), (64, 100, 10, false)] {
        let x = Var::from_tensor(&random(&mut rng, &[n, i])).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[o, i])).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[o])).unwrap();
        let y = ops::linear_in(&x, &w, Some(&b), relu, true).unwrap();
        let dy = random(&mut rng, y.dims());
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let (xr, wr) = (
            Var::from_tensor(&rounded(&x)).unwrap(),
            Var::from_tensor(&rounded(&w)).unwrap(),
        );
        let yr = ops::candle_linear(&xr, &wr, Some(&b), relu).unwrap();
        let rgrads = (&yr * &rounded(&dy))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(rel(&y, &yr) < 1e-5, "{n}×{i}→{o}");
        assert!(rel(grads.get(&x).unwrap(), rgrads.get(&xr).unwrap()) < 1e-5);
        assert!(rel(grads.get(&w).unwrap(), rgrads.get(&wr).unwrap()) < 1e-5);
    }
}

/// The tests above in child processes on each other path: the emulated
/// bf16 products (any CPU), the f32 kernels on rounded operands only, and
/// without the direct kernels (bf16 products or im2col everywhere).
#[test]
fn bf16_tests_pass_on_every_path() {
    if std::env::var_os("CNN_BF16").is_some() || std::env::var_os("CNN_DIRECT_CONV").is_some() {
        return;
    }
    for (var, choice) in [
        ("CNN_BF16", "emulated"),
        ("CNN_BF16", "fp32"),
        ("CNN_DIRECT_CONV", "0"),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["bf16::conv_bf16", "bf16::linear_bf16", "--test-threads=1"])
            .env(var, choice)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(" 0 failed") && stdout.contains(" 2 passed"),
            "{var}={choice}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// With AVX512-BF16, its products and their emulation give the same bits
/// for a whole network's training (the emulation is what a CPU without the
/// instruction can be checked with).
#[test]
fn the_instruction_and_its_emulation_train_to_the_same_bits() {
    let has = cnn::ops::kernels::get().features.avx512_bf16;
    if !has || std::env::var_os("CNN_BF16").is_some() {
        eprintln!("skipped: needs AVX512-BF16");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 64 outputs over a depth of 9·32: the bf16 products run.
    let config = write_config(
        dir.path(),
        "net.json",
        &serde_json::json!({
            "input_shape": [1, 28, 28], "num_classes": 10,
            "layers": [
                {"type": "conv2d", "out_channels": 32, "kernel_size": 3, "stride": 2},
                {"type": "relu"},
                {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "stride": 2},
                {"type": "relu"},
                {"type": "flatten"},
                {"type": "linear", "out_features": 10}
            ],
            "training": {"epochs": 1, "batch_size": 32, "precision": "bf16"},
            "data": {"val_size": 64, "limit_train": 256, "limit_test": 100}
        }),
    );
    let train = |name: &str, bf16: &str| {
        let (code, _, err) = run(cnn(dir.path())
            .env("CNN_BF16", bf16)
            .args(["train", "--quiet", "--out", name, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(mnist_small()));
        assert_eq!(code, 0, "{err}");
        tensors(&dir.path().join(name))
    };
    let hw = train("hw", "avx512bf16");
    let em = train("em", "emulated");
    assert_eq!(
        hw, em,
        "the instruction and the emulation trained differently"
    );
}

fn train_mnist(
    dir: &std::path::Path,
    config: &str,
    out: &str,
    extra: &[&str],
) -> serde_json::Value {
    let (code, _, err) = run(cnn(dir)
        .args([
            "train",
            "--quiet",
            "--epochs",
            "2",
            "--limit-train",
            "2000",
            "--out",
            out,
        ])
        .args(["--set", "data.val_size=500", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path(config))
        .args(extra));
    assert_eq!(code, 0, "{err}");
    history(&dir.join(out)).last().unwrap().clone()
}

/// LeNet and a batch-norm net learn in bf16 as in fp32 on real MNIST: the
/// test accuracy within two points (the spread of seeds on 2,000 images),
/// and the history says which precision ran.
#[test]
fn lenet_and_a_batch_norm_net_train_in_bf16_to_fp32_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let bn = write_config(
        dir.path(),
        "bn.json",
        &serde_json::json!({
            "input_shape": [1, 28, 28], "num_classes": 10,
            "layers": [
                {"type": "conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1, "bias": false},
                {"type": "batch_norm2d"}, {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2},
                {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1, "bias": false},
                {"type": "batch_norm2d"}, {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2},
                {"type": "flatten"}, {"type": "linear", "out_features": 10}
            ]
        }),
    );
    for config in [config_path("lenet.json"), bn] {
        let name = config.file_stem().unwrap().to_string_lossy().into_owned();
        let c = config.to_str().unwrap().to_string();
        let fp32 = train_mnist(dir.path(), &c, &format!("{name}-fp32"), &[]);
        let bf16 = train_mnist(
            dir.path(),
            &c,
            &format!("{name}-bf16"),
            &["--precision", "bf16"],
        );
        let (a, b) = (
            fp32["test_acc"].as_f64().unwrap(),
            bf16["test_acc"].as_f64().unwrap(),
        );
        assert!(
            b > 0.75 && (a - b).abs() < 0.02,
            "{name}: fp32 {a}, bf16 {b}"
        );
        assert_eq!(bf16["precision"], "bf16");
        assert_eq!(fp32["precision"], "fp32");
        let csv =
            std::fs::read_to_string(dir.path().join(format!("{name}-bf16/history.csv"))).unwrap();
        assert!(csv.lines().next().unwrap().ends_with(",precision"), "{csv}");
        assert!(csv.lines().nth(1).unwrap().ends_with(",bf16"), "{csv}");
        // The checkpoint evaluates in its own precision, and in fp32 on request.
        let ck = dir.path().join(format!("{name}-bf16/best.safetensors"));
        let e = eval_json(dir.path(), &ck, &[]);
        assert_eq!(e["accuracy"], bf16["test_acc"]);
        let e32 = eval_json(dir.path(), &ck, &["--precision", "fp32"]);
        assert!(
            (e32["accuracy"].as_f64().unwrap() - b).abs() < 0.01,
            "{e32}"
        );
    }
}

/// Same seed, same bits, at 1 and 2 threads.
#[test]
fn bf16_training_gives_the_same_bits_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for threads in ["1", "2"] {
        let out = format!("t{threads}");
        let (code, _, err) = run(cnn(dir.path())
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "train",
                "--quiet",
                "--epochs",
                "1",
                "--limit-train",
                "512",
                "--precision",
                "bf16",
            ])
            .args(["--set", "data.val_size=64", "--out", &out, "--data-dir"])
            .arg(mnist_small())
            .arg("--config")
            .arg(config_path("three-conv.json")));
        assert_eq!(code, 0, "{err}");
        runs.push(tensors(&dir.path().join(out)));
    }
    assert_eq!(runs[0], runs[1]);
}

/// Killed with -9 midway and resumed, a bf16 run ends with the tensors of
/// an uninterrupted one.
#[test]
fn a_bf16_run_resumes_exactly_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--quiet",
            "--epochs",
            "2",
            "--limit-train",
            "1024",
            "--precision",
            "bf16",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend([
            "--checkpoint-every".into(),
            "3".into(),
            "--set".into(),
            "data.val_size=64".into(),
        ]);
        v.extend([
            "--out".into(),
            out.into(),
            "--data-dir".into(),
            mnist_small().display().to_string(),
        ]);
        v.extend([
            "--config".into(),
            config_path("three-conv.json").display().to_string(),
        ]);
        v
    };
    let (code, _, err) = run(cnn(dir.path()).args(args("whole")));
    assert_eq!(code, 0, "{err}");
    let mut child = spawn(dir.path(), &args("killed"), "2");
    wait_for_step(&mut child, &dir.path().join("killed"), 9);
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, _, err) = run(cnn(dir.path()).args(["train", "--resume", "killed", "--quiet"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tensors(&dir.path().join("whole")),
        tensors(&dir.path().join("killed"))
    );
    assert_eq!(
        history_without_timing(&dir.path().join("whole")),
        history_without_timing(&dir.path().join("killed"))
    );
}

/// The choices, and fp16's refusal, named with the field.
#[test]
fn an_unknown_precision_is_refused_naming_the_field_and_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    for (value, needle) in [
        ("fp8", "the choices are"),
        ("bf17", "the choices are"),
        ("fp16", "not supported"),
    ] {
        assert_usage_error(
            cnn(dir.path())
                .args([
                    "summary",
                    "--set",
                    &format!("training.precision={value}"),
                    "--config",
                ])
                .arg(config_path("lenet.json")),
            &["training.precision", needle],
        );
        assert_usage_error(
            cnn(dir.path())
                .args(["train", "--show-config", "--precision", value, "--config"])
                .arg(config_path("lenet.json")),
            &["--precision", needle],
        );
    }
    let _ = DType::BF16;
}
