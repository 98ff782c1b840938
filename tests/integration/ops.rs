//! The project's CPU kernels against candle's reference ops and against
//! finite differences: forward values and every gradient, on shapes with
//! stride, padding (also uneven), dilation, groups, odd sizes and batch 1.

use candle_core::{DType, Device, Tensor, Var};
use cnn::geometry::{ConvGeometry, Pad4, PaddingMode, Pair, PoolGeometry};
use cnn::ops;
use rand::{Rng, SeedableRng};

fn random(rng: &mut rand_chacha::ChaCha8Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Largest |a - b| relative to max(1, |b|).
fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[derive(Debug, Clone, Copy)]
struct ConvCase {
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: Pad4,
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
}

impl ConvCase {
    fn geom(&self) -> ConvGeometry {
        ConvGeometry {
            in_channels: self.c,
            out_channels: self.o,
            kernel: Pair {
                h: self.k.0,
                w: self.k.1,
            },
            stride: Pair {
                h: self.stride.0,
                w: self.stride.1,
            },
            dilation: Pair {
                h: self.dilation.0,
                w: self.dilation.1,
            },
            padding: self.pad,
            padding_mode: PaddingMode::Zeros,
            groups: self.groups,
            bias: self.bias,
        }
    }
    /// Whether the CPU may take Winograd's F(4×4, 3×3) for this case (on
    /// AVX2, 8 channels fill the lanes).
    fn winograd(&self) -> bool {
        self.k == (3, 3)
            && self.stride == (1, 1)
            && self.dilation == (1, 1)
            && self.groups == 1
            && self.c >= 8
            && self.o >= 8
    }
    /// What candle's conv2d can do: one padding, stride and dilation for both axes.
    fn candle_can(&self) -> bool {
        let p = self.pad;
        p.top == p.bottom
            && p.left == p.right
            && p.top == p.left
            && self.stride.0 == self.stride.1
            && self.dilation.0 == self.dilation.1
    }
}

fn pad(p: usize) -> Pad4 {
    Pad4::symmetric(Pair::square(p))
}

fn conv_cases() -> Vec<ConvCase> {
    let base = ConvCase {
        n: 2,
        c: 3,
        hw: (9, 9),
        o: 4,
        k: (3, 3),
        stride: (1, 1),
        pad: pad(0),
        dilation: (1, 1),
        groups: 1,
        bias: true,
    };
    vec![
        base,
        ConvCase { n: 1, ..base },
        ConvCase {
            n: 5,
            c: 1,
            hw: (28, 28),
            o: 6,
            k: (5, 5),
            pad: pad(2),
            ..base
        },
        ConvCase {
            hw: (11, 7),
            stride: (2, 2),
            pad: pad(1),
            ..base
        },
        ConvCase {
            dilation: (2, 2),
            pad: pad(2),
            bias: false,
            ..base
        },
        ConvCase {
            c: 4,
            o: 6,
            groups: 2,
            ..base
        },
        ConvCase {
            c: 4,
            o: 4,
            groups: 4,
            k: (3, 3),
            pad: pad(1),
            ..base
        },
        ConvCase {
            hw: (5, 5),
            k: (5, 5),
            ..base
        },
        ConvCase {
            k: (1, 1),
            stride: (3, 3),
            ..base
        },
        ConvCase {
            n: 7,
            c: 16,
            hw: (10, 10),
            o: 32,
            k: (5, 5),
            ..base
        },
        // Images large enough that fewer of them share one gemm (2, then 1).
        ConvCase {
            n: 5,
            c: 8,
            hw: (16, 16),
            o: 6,
            k: (5, 5),
            ..base
        },
        ConvCase {
            n: 3,
            c: 16,
            hw: (20, 20),
            o: 8,
            k: (5, 5),
            pad: pad(1),
            ..base
        },
        // Through the direct kernels (AVX-512, stride 1): padding, channel
        // counts that fill a vector only in part, several vectors (more
        // than a tile takes), each kernel width they take, groups, an
        // output narrower than a tile.
        ConvCase {
            n: 3,
            c: 16,
            hw: (12, 11),
            o: 32,
            k: (5, 5),
            pad: pad(2),
            ..base
        },
        ConvCase {
            c: 12,
            o: 12,
            k: (3, 3),
            pad: pad(1),
            ..base
        },
        ConvCase {
            c: 28,
            hw: (4, 6),
            o: 80,
            k: (1, 1),
            ..base
        },
        ConvCase {
            n: 1,
            c: 16,
            hw: (10, 10),
            o: 16,
            k: (7, 7),
            pad: pad(3),
            bias: false,
            ..base
        },
        ConvCase {
            c: 32,
            hw: (7, 7),
            o: 32,
            groups: 2,
            pad: pad(1),
            ..base
        },
        ConvCase {
            c: 48,
            hw: (9, 12),
            o: 48,
            k: (3, 5),
            pad: pad(1),
            ..base
        },
        ConvCase {
            n: 3,
            c: 16,
            hw: (5, 5),
            o: 16,
            k: (5, 5),
            ..base
        },
        ConvCase {
            n: 2,
            c: 1,
            hw: (28, 28),
            o: 16,
            k: (5, 5),
            ..base
        },
        ConvCase {
            c: 16,
            hw: (6, 9),
            o: 16,
            pad: Pad4 {
                top: 1,
                bottom: 2,
                left: 0,
                right: 1,
            },
            ..base
        },
        // Few input channels: the input gradient still goes through the
        // direct kernels (LeNet's second layer, and 7 channels with padding).
        ConvCase {
            n: 3,
            c: 6,
            hw: (14, 14),
            o: 16,
            k: (5, 5),
            ..base
        },
        ConvCase {
            c: 7,
            hw: (8, 9),
            o: 32,
            pad: pad(1),
            ..base
        },
        // 3×3 stride 1 through Winograd F(4×4, 3×3): whole tiles, tiles cut
        // by the edge, no padding and full padding, channel counts that
        // fill their vectors in part, many channels, and a batch of more
        // images than one task takes.
        ConvCase {
            n: 3,
            c: 16,
            hw: (8, 8),
            o: 16,
            pad: pad(1),
            ..base
        },
        ConvCase {
            n: 2,
            c: 32,
            hw: (9, 11),
            o: 48,
            pad: pad(1),
            ..base
        },
        ConvCase {
            c: 24,
            hw: (6, 7),
            o: 40,
            bias: false,
            ..base
        },
        ConvCase {
            c: 16,
            hw: (5, 5),
            o: 16,
            pad: pad(2),
            ..base
        },
        ConvCase {
            n: 2,
            c: 128,
            hw: (8, 8),
            o: 128,
            pad: pad(1),
            ..base
        },
        ConvCase {
            n: 37,
            c: 16,
            hw: (8, 8),
            o: 16,
            pad: pad(1),
            ..base
        },
        ConvCase {
            n: 3,
            c: 16,
            hw: (9, 10),
            o: 32,
            pad: Pad4 {
                top: 1,
                bottom: 2,
                left: 0,
                right: 1,
            },
            ..base
        },
        // Stride 2 through the direct kernels: 3×3 with padding, 1×1 (a
        // residual net's shortcut), 5×5, and an input whose last row and
        // column no window reaches.
        ConvCase {
            n: 3,
            c: 16,
            hw: (9, 9),
            o: 32,
            stride: (2, 2),
            pad: pad(1),
            ..base
        },
        ConvCase {
            n: 2,
            c: 32,
            hw: (8, 8),
            o: 64,
            k: (1, 1),
            stride: (2, 2),
            bias: false,
            ..base
        },
        ConvCase {
            n: 2,
            c: 16,
            hw: (11, 11),
            o: 16,
            k: (5, 5),
            stride: (2, 2),
            pad: pad(2),
            ..base
        },
        ConvCase {
            n: 2,
            c: 16,
            hw: (8, 10),
            o: 16,
            stride: (2, 2),
            ..base
        },
        ConvCase {
            n: 2,
            c: 16,
            hw: (9, 9),
            o: 16,
            stride: (2, 1),
            pad: pad(1),
            ..base
        },
        // Beyond candle: uneven padding, stride and dilation per axis.
        ConvCase {
            pad: Pad4 {
                top: 1,
                bottom: 2,
                left: 0,
                right: 1,
            },
            ..base
        },
        ConvCase {
            k: (3, 2),
            stride: (2, 1),
            dilation: (1, 2),
            hw: (10, 8),
            ..base
        },
    ]
}

/// `sum(conv(x, w, b) · r)` and its gradients, through `f`.
fn conv_grads(
    case: &ConvCase,
    f: &dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
    seed: u64,
) -> (Tensor, Vec<Tensor>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = Var::from_tensor(&random(&mut rng, &[case.n, case.c, case.hw.0, case.hw.1])).unwrap();
    let w = Var::from_tensor(&random(
        &mut rng,
        &[case.o, case.c / case.groups, case.k.0, case.k.1],
    ))
    .unwrap();
    let b = Var::from_tensor(&random(&mut rng, &[case.o])).unwrap();
    let y = f(
        x.as_tensor(),
        w.as_tensor(),
        case.bias.then(|| b.as_tensor()),
    );
    let r = random(&mut rng, y.dims());
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let mut grads = vec![g.get(&x).unwrap().clone(), g.get(&w).unwrap().clone()];
    if case.bias {
        grads.push(g.get(&b).unwrap().clone());
    }
    (y, grads)
}

#[test]
fn conv_matches_candle_forward_and_gradients() {
    for (i, case) in conv_cases().iter().filter(|c| c.candle_can()).enumerate() {
        for relu in [false, true] {
            let g = case.geom();
            let ours = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
                ops::conv2d(x, w, b, &g, relu).unwrap()
            };
            let theirs = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
                ops::candle_conv2d(x, w, b, &g, relu).unwrap()
            };
            let (y1, g1) = conv_grads(case, &ours, i as u64);
            let (y2, g2) = conv_grads(case, &theirs, i as u64);
            // float32 rounding grows with the number of terms summed, and
            // Winograd's transforms round several times more.
            let terms = (case.c / case.groups * case.k.0 * case.k.1) as f32;
            let wino = if case.winograd() { 8.0 } else { 1.0 };
            let tol = wino * 1e-5 * (terms / 100.0).sqrt().max(1.0);
            assert!(
                max_err(&y1, &y2) < tol,
                "{case:?} relu {relu}: forward differs by {}",
                max_err(&y1, &y2)
            );
            for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
                let e = max_err(a, b);
                assert!(
                    e < wino * 1e-4,
                    "{case:?} relu {relu}: gradient {k} differs by {e}"
                );
            }
        }
    }
}

/// The convolution tests again in child processes, with the AVX2 kernels,
/// with the direct kernels off (im2col), and with Winograd off (3×3 layers
/// through the direct kernels): a process picks its kernels once, and this
/// one took the best the CPU has.
#[test]
fn conv_tests_pass_with_every_kernel_choice() {
    if std::env::var_os("CNN_DIRECT_CONV").is_some() || std::env::var_os("CNN_WINOGRAD").is_some() {
        return;
    }
    for (var, choice) in [
        ("CNN_DIRECT_CONV", "avx2"),
        ("CNN_DIRECT_CONV", "0"),
        ("CNN_WINOGRAD", "0"),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["ops::conv_", "--test-threads=1"])
            .env(var, choice)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(" 0 failed") && !stdout.contains(" 0 passed"),
            "{var}={choice}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A first layer: the input is data, not a variable, so only the weight and
/// bias gradients are computed (the kernels skip the input gradient).
#[test]
fn conv_weight_gradients_without_an_input_gradient_match_candle() {
    for (i, (c, o, hw, k, p)) in [(1, 16, 28, 5, 0), (3, 32, 12, 3, 1), (16, 16, 9, 5, 2)]
        .into_iter()
        .enumerate()
    {
        let case = ConvCase {
            n: 3,
            c,
            hw: (hw, hw),
            o,
            k: (k, k),
            stride: (1, 1),
            pad: pad(p),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        };
        let g = case.geom();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(50 + i as u64);
        let x = random(&mut rng, &[case.n, c, hw, hw]);
        let w0 = random(&mut rng, &[o, c, k, k]);
        let b0 = random(&mut rng, &[o]);
        let grads = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor| {
            let (w, b) = (
                Var::from_tensor(&w0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let y = f(&x, w.as_tensor(), b.as_tensor());
            let r = Tensor::ones(y.dims(), DType::F32, &Device::Cpu).unwrap();
            let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
            (g.get(&w).unwrap().clone(), g.get(&b).unwrap().clone())
        };
        let (w1, b1) = grads(&|x, w, b| ops::conv2d(x, w, Some(b), &g, true).unwrap());
        let (w2, b2) = grads(&|x, w, b| ops::candle_conv2d(x, w, Some(b), &g, true).unwrap());
        assert!(
            max_err(&w1, &w2) < 1e-4,
            "{case:?}: dW differs by {}",
            max_err(&w1, &w2)
        );
        assert!(
            max_err(&b1, &b2) < 1e-4,
            "{case:?}: db differs by {}",
            max_err(&b1, &b2)
        );
    }
}

/// Central differences of `sum(conv(..) · r)` at a few coordinates of every
/// input; the convolution is linear, so they are exact up to rounding.
#[test]
fn conv_gradients_match_finite_differences() {
    for (i, case) in conv_cases().iter().enumerate() {
        let g = case.geom();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + i as u64);
        let x = random(&mut rng, &[case.n, case.c, case.hw.0, case.hw.1]);
        let w = random(
            &mut rng,
            &[case.o, case.c / case.groups, case.k.0, case.k.1],
        );
        let b = random(&mut rng, &[case.o]);
        let loss_of = |x: &Tensor, w: &Tensor, b: &Tensor, r: Option<&Tensor>| -> (f64, Tensor) {
            let y = ops::conv2d(x, w, case.bias.then_some(b), &g, false).unwrap();
            let r = r
                .cloned()
                .unwrap_or_else(|| Tensor::ones(y.dims(), DType::F32, &Device::Cpu).unwrap());
            let l = (y.to_dtype(DType::F64).unwrap() * r.to_dtype(DType::F64).unwrap()).unwrap();
            (l.sum_all().unwrap().to_scalar::<f64>().unwrap(), y)
        };
        let (_, y) = loss_of(&x, &w, &b, None);
        let r = random(&mut rng, y.dims());
        let (xv, wv, bv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&w).unwrap(),
            Var::from_tensor(&b).unwrap(),
        );
        let y = ops::conv2d(
            xv.as_tensor(),
            wv.as_tensor(),
            case.bias.then(|| bv.as_tensor()),
            &g,
            false,
        )
        .unwrap();
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut inputs: Vec<(&str, &Tensor, &Var)> = vec![("x", &x, &xv), ("w", &w, &wv)];
        if case.bias {
            inputs.push(("b", &b, &bv));
        }
        for (which, t, var) in inputs {
            let analytic = values(grads.get(var).unwrap());
            let base = values(t);
            for _ in 0..6 {
                let j = rng.random_range(0..base.len());
                // Exact for any step (the loss is linear in each input):
                // a large one keeps the forward pass's rounding small beside it.
                let eps = 0.5f32;
                let shifted = |d: f32| {
                    let mut v = base.clone();
                    v[j] += d;
                    Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
                };
                let at = |d: f32| match which {
                    "x" => loss_of(&shifted(d), &w, &b, Some(&r)).0,
                    "w" => loss_of(&x, &shifted(d), &b, Some(&r)).0,
                    _ => loss_of(&x, &w, &shifted(d), Some(&r)).0,
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                let err = (numeric - analytic[j] as f64).abs() / numeric.abs().max(1.0);
                assert!(
                    err < 2e-3,
                    "{case:?}: d{which}[{j}] analytic {} numeric {numeric}",
                    analytic[j]
                );
            }
        }
    }
}

fn pool_geom(k: usize, s: usize, p: usize) -> PoolGeometry {
    PoolGeometry {
        kernel: Pair::square(k),
        stride: Pair::square(s),
        padding: Pair::square(p),
    }
}

/// Naive pooling over one plane, for reference: values, and for max pooling
/// the index of the first maximum of each window.
fn naive_pool(
    x: &[f32],
    h: usize,
    w: usize,
    g: &PoolGeometry,
    max: bool,
) -> (Vec<f32>, Vec<Vec<usize>>) {
    let oh = (h + 2 * g.padding.h - g.kernel.h) / g.stride.h + 1;
    let ow = (w + 2 * g.padding.w - g.kernel.w) / g.stride.w + 1;
    let mut out = vec![];
    let mut members = vec![];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut cells = vec![];
            for ky in 0..g.kernel.h {
                for kx in 0..g.kernel.w {
                    let y = (oy * g.stride.h + ky) as isize - g.padding.h as isize;
                    let xx = (ox * g.stride.w + kx) as isize - g.padding.w as isize;
                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                        cells.push(y as usize * w + xx as usize);
                    }
                }
            }
            if max {
                let best = *cells
                    .iter()
                    .fold(&cells[0], |b, c| if x[*c] > x[*b] { c } else { b });
                out.push(x[best]);
                members.push(vec![best]);
            } else {
                out.push(
                    cells.iter().map(|&c| x[c]).sum::<f32>() / (g.kernel.h * g.kernel.w) as f32,
                );
                members.push(cells);
            }
        }
    }
    (out, members)
}

#[test]
fn pooling_matches_a_naive_reference_and_candle() {
    let cases = [
        (2, 2, 0),
        (3, 2, 1),
        (3, 3, 0),
        (4, 4, 0),
        (2, 1, 0),
        (3, 1, 1),
        (5, 3, 2),
    ];
    for (i, &(k, s, p)) in cases.iter().enumerate() {
        for max in [true, false] {
            for (n, c, h, w) in [(2, 3, 8, 8), (1, 2, 7, 9)] {
                let g = pool_geom(k, s, p);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
                let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
                let pool = |t: &Tensor| {
                    if max {
                        ops::max_pool2d(t, &g).unwrap()
                    } else {
                        ops::avg_pool2d(t, &g).unwrap()
                    }
                };
                let y = pool(x.as_tensor());
                let r = random(&mut rng, y.dims());
                let dx = values(
                    (&y * &r)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                        .get(&x)
                        .unwrap(),
                );
                let (xs, ys, rs) = (values(x.as_tensor()), values(&y), values(&r));
                let mut expected_dx = vec![0f32; xs.len()];
                let (plane_in, plane_out) = (h * w, ys.len() / (n * c));
                for plane in 0..n * c {
                    let (vals, members) =
                        naive_pool(&xs[plane * plane_in..(plane + 1) * plane_in], h, w, &g, max);
                    for (o, (v, cells)) in vals.iter().zip(&members).enumerate() {
                        let got = ys[plane * plane_out + o];
                        assert!(
                            (got - v).abs() < 1e-6,
                            "k{k} s{s} p{p} max {max}: {got} vs {v}"
                        );
                        let share = if max { 1.0 } else { 1.0 / (k * k) as f32 };
                        for &cell in cells {
                            expected_dx[plane * plane_in + cell] +=
                                rs[plane * plane_out + o] * share;
                        }
                    }
                }
                for (a, b) in dx.iter().zip(&expected_dx) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "k{k} s{s} p{p} max {max}: gradient {a} vs {b}"
                    );
                }
                // The candle-op version (what other devices run) agrees, gradients too.
                let reference = if max {
                    ops::candle_max_pool2d(x.as_tensor(), &g)
                } else {
                    ops::candle_avg_pool2d(x.as_tensor(), &g)
                }
                .unwrap();
                assert!(max_err(&y, &reference) < 1e-6);
                let rdx = (&reference * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (a, b) in dx.iter().zip(values(rdx.get(&x).unwrap())) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "candle ops k{k} s{s} p{p} max {max}: {a} vs {b}"
                    );
                }
                // And candle's built-in pooling, forward only: its max-pool
                // backward scales gradients by 1/(kh·kw) (candle 0.11).
                if s == k && p == 0 {
                    let builtin = if max {
                        x.as_tensor().max_pool2d(k)
                    } else {
                        x.as_tensor().avg_pool2d(k)
                    }
                    .unwrap();
                    assert!(max_err(&y, &builtin) < 1e-6);
                }
            }
        }
    }
}

type LinearFn = dyn Fn(&Tensor, &Tensor, Option<&Tensor>, bool) -> anyhow::Result<Tensor>;

#[test]
fn linear_matches_candle_forward_and_gradients() {
    for (i, &(n, inp, out)) in [
        (1, 5, 3),
        (64, 400, 120),
        (37, 84, 10),
        (3, 1, 17),
        (40, 33, 40),
    ]
    .iter()
    .enumerate()
    {
        for bias in [true, false] {
            for relu in [false, true] {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
                let x = Var::from_tensor(&random(&mut rng, &[n, inp])).unwrap();
                let w = Var::from_tensor(&random(&mut rng, &[out, inp])).unwrap();
                let b = Var::from_tensor(&random(&mut rng, &[out])).unwrap();
                let r = random(&mut rng, &[n, out]);
                let run = |f: &LinearFn| {
                    let y = f(
                        x.as_tensor(),
                        w.as_tensor(),
                        bias.then(|| b.as_tensor()),
                        relu,
                    )
                    .unwrap();
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let mut grads = vec![y, g.get(&x).unwrap().clone(), g.get(&w).unwrap().clone()];
                    if bias {
                        grads.push(g.get(&b).unwrap().clone());
                    }
                    grads
                };
                let ours = run(&ops::linear);
                let theirs = run(&ops::candle_linear);
                for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    let e = max_err(a, b);
                    assert!(
                        e < 1e-4,
                        "n{n} in{inp} out{out} bias {bias} relu {relu}: output {k} differs by {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cross_entropy_matches_candle_with_and_without_smoothing() {
    for (i, &(n, k)) in [(1, 10), (64, 10), (33, 7), (5, 2)].iter().enumerate() {
        for smoothing in [0.0, 0.1] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
            // Large logits too: the softmax must stay stable.
            let logits = Var::from_tensor(&(random(&mut rng, &[n, k]) * 30.0).unwrap()).unwrap();
            let t: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
            let t = Tensor::from_vec(t, n, &Device::Cpu).unwrap();
            let run = |f: &dyn Fn(&Tensor, &Tensor, f64) -> anyhow::Result<Tensor>| {
                let l = f(logits.as_tensor(), &t, smoothing).unwrap();
                let g = (&l * 3.0).unwrap().backward().unwrap();
                (
                    l.to_scalar::<f32>().unwrap(),
                    g.get(&logits).unwrap().clone(),
                )
            };
            let (l1, g1) = run(&ops::cross_entropy);
            let (l2, g2) = run(&ops::candle_cross_entropy);
            assert!(
                (l1 - l2).abs() / l2.abs().max(1.0) < 1e-5,
                "n{n} k{k} ε{smoothing}: loss {l1} vs {l2}"
            );
            assert!(
                max_err(&g1, &g2) < 1e-5,
                "n{n} k{k} ε{smoothing}: gradient differs by {}",
                max_err(&g1, &g2)
            );
        }
    }
}

#[test]
fn max_pooling_gives_ties_to_the_first_maximum_and_propagates_nan() {
    // 2×2 windows over a 4×5 plane (the last column is in no window).
    #[rustfmt::skip]
    let xs: Vec<f32> = vec![
        1.0, 1.0,   0.0, 3.0,       9.0,
        1.0, 1.0,   3.0, 3.0,       9.0,
        -1.0, 2.0,  f32::NAN, 5.0,  9.0,
        2.0, 0.0,   5.0, f32::NAN,  9.0,
    ];
    let x = Var::from_tensor(&Tensor::from_vec(xs, (1, 1, 4, 5), &Device::Cpu).unwrap()).unwrap();
    let y = ops::max_pool2d(x.as_tensor(), &pool_geom(2, 2, 0)).unwrap();
    let ys = values(&y);
    assert_eq!(&ys[..3], &[1.0, 3.0, 2.0]);
    assert!(ys[3].is_nan());
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dx = values(grads.get(&x).unwrap());
    #[rustfmt::skip]
    let expected: Vec<f32> = vec![
        1.0, 0.0,  0.0, 1.0,  0.0,
        0.0, 0.0,  0.0, 0.0,  0.0,
        0.0, 1.0,  1.0, 0.0,  0.0,
        0.0, 0.0,  0.0, 0.0,  0.0,
    ];
    assert_eq!(dx, expected);
}

/// A batch-norm layer with random `γ`, `β` (when `affine`) and running
/// statistics drawn from `seed`: two calls give two independent layers with
/// the same values.
fn bn_layer(seed: u64, c: usize, affine: bool) -> (ops::BatchNormParams, Option<(Var, Var)>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mean = random(&mut rng, &[c]);
    let var = (random(&mut rng, &[c]).abs().unwrap() + 0.5).unwrap();
    let gb = affine.then(|| {
        let g = (random(&mut rng, &[c]) + 1.0).unwrap();
        (
            Var::from_tensor(&g).unwrap(),
            Var::from_tensor(&random(&mut rng, &[c])).unwrap(),
        )
    });
    let (mean, var) = (
        Var::from_tensor(&mean).unwrap(),
        Var::from_tensor(&var).unwrap(),
    );
    let p = ops::BatchNormParams::new(
        c,
        gb.as_ref()
            .map(|(g, b)| (g.as_tensor().clone(), b.as_tensor().clone())),
        mean.as_tensor(),
        var.as_tensor(),
        1e-5,
        0.1,
    )
    .unwrap();
    (p, gb)
}

type BatchNormFn = dyn Fn(&Tensor, &ops::BatchNormParams, bool, bool) -> anyhow::Result<Tensor>;

/// Batch norm's output, the gradients of `sum(y · r)` (x, then γ and β
/// when affine) and the running statistics afterwards.
fn bn_run(
    f: &BatchNormFn,
    dims: &[usize],
    affine: bool,
    train: bool,
    relu: bool,
    seed: u64,
) -> (Tensor, Vec<Tensor>, Vec<Tensor>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Off-centre inputs, as a convolution's outputs are.
    let x = Var::from_tensor(&random(&mut rng, dims).affine(2.0, 0.7).unwrap()).unwrap();
    let (p, gb) = bn_layer(seed + 1, dims[1], affine);
    let y = f(x.as_tensor(), &p, train, relu).unwrap();
    let r = random(&mut rng, y.dims());
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut grads = vec![g.get(&x).unwrap().clone()];
    if let Some((gamma, beta)) = &gb {
        grads.push(g.get(gamma).unwrap().clone());
        grads.push(g.get(beta).unwrap().clone());
    }
    let running = vec![
        p.running_mean.as_tensor().copy().unwrap(),
        p.running_var.as_tensor().copy().unwrap(),
    ];
    (y, grads, running)
}

/// Shapes batch norm meets: 2d with planes large enough to run channel by
/// channel (also odd channel counts and sizes) and small ones (2×2, 1×1),
/// 1d on `[batch, features]` and on `[batch, features, length]`.
const BN_SHAPES: &[&[usize]] = &[
    &[4, 3, 5, 7],
    &[3, 32, 8, 8],
    &[2, 17, 9, 3],
    &[6, 5, 2, 2],
    &[3, 7, 1, 1],
    &[8, 6],
    &[16, 33],
    &[5, 4, 20],
];

#[test]
fn batch_norm_matches_candle_forward_gradients_and_running_statistics() {
    for (i, dims) in BN_SHAPES.iter().enumerate() {
        for train in [true, false] {
            for affine in [true, false] {
                for relu in [false, true] {
                    let what = format!("{dims:?} train {train} affine {affine} relu {relu}");
                    let seed = 300 + i as u64;
                    let (y1, g1, r1) = bn_run(&ops::batch_norm, dims, affine, train, relu, seed);
                    let (y2, g2, r2) =
                        bn_run(&ops::candle_batch_norm, dims, affine, train, relu, seed);
                    assert!(y1.is_contiguous(), "{what}: output not contiguous");
                    assert!(
                        max_err(&y1, &y2) < 1e-5,
                        "{what}: forward differs by {}",
                        max_err(&y1, &y2)
                    );
                    assert_eq!(g1.len(), g2.len());
                    for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
                        let e = max_err(a, b);
                        assert!(e < 1e-4, "{what}: gradient {k} differs by {e}");
                    }
                    for (k, (a, b)) in r1.iter().zip(&r2).enumerate() {
                        let e = max_err(a, b);
                        assert!(e < 1e-6, "{what}: running statistic {k} differs by {e}");
                    }
                }
            }
        }
    }
}

/// Batch norm (and ReLU) with a 2×2 max pooling fused in, against candle's
/// batch norm and pooling one after the other: odd sizes (the last row and
/// column pooled by no window), one-pixel outputs, both passes.
#[test]
fn batch_norm_with_max_pooling_matches_candle() {
    let g = pool_geom(2, 2, 0);
    let candle = move |x: &Tensor, p: &ops::BatchNormParams, train: bool, relu: bool| {
        ops::candle_max_pool2d(&ops::candle_batch_norm(x, p, train, relu)?, &g)
    };
    let ours = move |x: &Tensor, p: &ops::BatchNormParams, train: bool, relu: bool| {
        ops::batch_norm_max_pool(x, p, train, relu, &g)
    };
    for (i, dims) in [
        &[3usize, 5, 7, 9][..],
        &[2, 32, 8, 8],
        &[4, 3, 2, 3],
        &[2, 16, 32, 32],
    ]
    .iter()
    .enumerate()
    {
        for train in [true, false] {
            for affine in [true, false] {
                for relu in [false, true] {
                    let what = format!("{dims:?} train {train} affine {affine} relu {relu}");
                    let seed = 500 + i as u64;
                    let (y1, g1, r1) = bn_run(&ours, dims, affine, train, relu, seed);
                    let (y2, g2, r2) = bn_run(&candle, dims, affine, train, relu, seed);
                    assert_eq!(y1.dims(), y2.dims(), "{what}");
                    assert!(
                        max_err(&y1, &y2) < 1e-5,
                        "{what}: forward differs by {}",
                        max_err(&y1, &y2)
                    );
                    for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
                        let e = max_err(a, b);
                        assert!(e < 1e-4, "{what}: gradient {k} differs by {e}");
                    }
                    for (a, b) in r1.iter().zip(&r2) {
                        assert!(max_err(a, b) < 1e-6, "{what}: running statistics differ");
                    }
                }
            }
        }
    }
}

/// Central differences of `sum(batch_norm(x) · r)` in training, where every
/// output depends on every input of its channel through the statistics.
#[test]
fn batch_norm_gradients_match_finite_differences() {
    for (i, dims) in BN_SHAPES.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(400 + i as u64);
        let c = dims[1];
        let x = random(&mut rng, dims).affine(2.0, 0.7).unwrap();
        let gamma = (random(&mut rng, &[c]) + 1.0).unwrap();
        let beta = random(&mut rng, &[c]);
        let r = random(&mut rng, dims);
        let (p, gb) = bn_layer(0, c, true);
        let (gv, bv) = gb.unwrap();
        gv.set(&gamma).unwrap();
        bv.set(&beta).unwrap();
        let loss = |x: &Tensor| -> f64 {
            let y = ops::batch_norm(x, &p, true, false).unwrap();
            (y.to_dtype(DType::F64).unwrap() * r.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let xv = Var::from_tensor(&x).unwrap();
        let y = ops::batch_norm(xv.as_tensor(), &p, true, false).unwrap();
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (which, var) in [("x", &xv), ("gamma", &gv), ("beta", &bv)] {
            let analytic = values(grads.get(var).unwrap());
            let base = values(var.as_tensor());
            for _ in 0..6 {
                let j = rng.random_range(0..base.len());
                let eps = 5e-3f32;
                let at = |d: f32| {
                    let mut v = base.clone();
                    v[j] += d;
                    let t = Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
                    if which == "x" {
                        loss(&t)
                    } else {
                        var.set(&t).unwrap();
                        let l = loss(&x);
                        var.set(&Tensor::from_vec(base.clone(), var.dims(), &Device::Cpu).unwrap())
                            .unwrap();
                        l
                    }
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                let err = (numeric - analytic[j] as f64).abs() / numeric.abs().max(1.0);
                assert!(
                    err < 3e-3,
                    "{dims:?}: d{which}[{j}] analytic {} numeric {numeric}",
                    analytic[j]
                );
            }
        }
    }
}

/// Issue #21: batch_norm1d's output goes straight into the CPU kernels of
/// the next layer (they need contiguous tensors).
#[test]
fn batch_norm1d_output_feeds_a_linear_layer() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let x = random(&mut rng, &[10, 12]);
    let w = random(&mut rng, &[4, 12]);
    for train in [true, false] {
        let (p, _) = bn_layer(1, 12, true);
        let y = ops::batch_norm(&x, &p, train, true).unwrap();
        let ours = ops::linear(&y, &w, None, false).unwrap();
        let (p, _) = bn_layer(1, 12, true);
        let y = ops::candle_batch_norm(&x, &p, train, true).unwrap();
        let theirs = ops::candle_linear(&y, &w, None, false).unwrap();
        assert!(max_err(&ours, &theirs) < 1e-5);
    }
}

/// Training needs two values per channel at least (PyTorch refuses too):
/// the error says what to change, it does not divide by zero.
#[test]
fn batch_norm_training_on_one_value_per_channel_is_refused() {
    let x = Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap();
    let (p, _) = bn_layer(1, 3, true);
    let err = ops::batch_norm(&x, &p, true, false).unwrap_err();
    assert!(
        format!("{err:#}").contains("more than one value per channel"),
        "{err:#}"
    );
    // Evaluation uses the running statistics: one image is fine.
    ops::batch_norm(&x, &p, false, false).unwrap();
}

/// Dropout draws the mask a sequential draw gives (whatever the threads),
/// leaves the generator where that draw would, and passes the gradient
/// through the kept elements only.
#[test]
fn dropout_matches_candle_and_leaves_the_generator_alike() {
    for (dims, p) in [
        (&[3usize, 5, 7][..], 0.3f32),
        (&[2, 40000][..], 0.5),
        (&[1, 1][..], 0.1),
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x = Var::from_tensor(&random(&mut rng, dims)).unwrap();
        let r = random(&mut rng, dims);
        let run =
            |f: &dyn Fn(&Tensor, f32, &mut rand_chacha::ChaCha8Rng) -> anyhow::Result<Tensor>| {
                let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(4);
                g.set_stream(7);
                let y = f(x.as_tensor(), p, &mut g).unwrap();
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let next: u32 = g.random();
                (values(&y), values(grads.get(&x).unwrap()), next)
            };
        let (y1, g1, n1) = run(&ops::dropout);
        let (y2, g2, n2) = run(&ops::candle_dropout);
        assert_eq!(n1, n2, "{dims:?}: generator position");
        for (a, b) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)) {
            assert!(a == b, "{dims:?}: {a} vs {b}");
        }
        let kept = y1.iter().filter(|v| **v != 0.0).count() as f32 / y1.len() as f32;
        if y1.len() > 1000 {
            assert!((kept - (1.0 - p)).abs() < 0.02, "{dims:?}: kept {kept}");
        }
    }
}

#[test]
fn relu_and_residual_add_relu_match_candle_with_pytorchs_gradient_at_zero() {
    for dims in [&[3usize, 5, 7][..], &[2, 3, 100, 100][..], &[1, 1][..]] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let a = Var::from_tensor(&random(&mut rng, dims)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, dims)).unwrap();
        let r = random(&mut rng, dims);
        let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();

        let y = ops::relu(a.as_tensor()).unwrap();
        let reference = a.as_tensor().relu().unwrap();
        assert_eq!(values(&y), values(&reference), "{dims:?}: relu");
        let dx = grads(&y).get(&a).unwrap().clone();
        let want = (&r * a.as_tensor().gt(0.0).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!(values(&dx), values(&want), "{dims:?}: relu gradient");

        let y = ops::add_relu(a.as_tensor(), b.as_tensor()).unwrap();
        let sum = (a.as_tensor() + b.as_tensor()).unwrap();
        assert_eq!(
            values(&y),
            values(&sum.relu().unwrap()),
            "{dims:?}: add+relu"
        );
        let g = grads(&y);
        let want = (&r * sum.gt(0.0).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
        for v in [&a, &b] {
            assert_eq!(
                values(g.get(v).unwrap()),
                values(&want),
                "{dims:?}: add+relu gradient"
            );
        }
    }
    // At exactly zero the gradient is zero, as in PyTorch (candle's relu
    // passes it).
    let x = Var::from_tensor(&Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu).unwrap()).unwrap();
    let zero = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    for y in [
        ops::relu(x.as_tensor()).unwrap(),
        ops::add_relu(x.as_tensor(), &zero).unwrap(),
    ] {
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(values(g.get(&x).unwrap()), [0.0, 0.0, 1.0]);
    }
}

/// candle-core as cnn builds it (vendor/candle-core) stores a tensor's first
/// gradient as it is and adds the later ones; a tensor used by several ops,
/// or given one gradient tensor for two arguments (the residual sum), must
/// still get the sum of them all.
#[test]
fn gradients_of_a_tensor_used_several_times_add_up() {
    let x = Var::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap();
    let y = Var::new(&[0.5f32, 0.5, -1.0], &Device::Cpu).unwrap();
    let (xt, yt) = (x.as_tensor(), y.as_tensor());
    // f = Σ (x·y + x + x) + Σ relu(x + y), with x + y = [1.5, -1.5, 2].
    let products = ((xt * yt).unwrap() + xt).unwrap();
    let f = ((products + xt).unwrap().sum_all().unwrap()
        + ops::add_relu(xt, yt).unwrap().sum_all().unwrap())
    .unwrap();
    let g = f.backward().unwrap();
    // ∂f/∂x = y + 2 + [x + y > 0], ∂f/∂y = x + [x + y > 0].
    assert_eq!(values(g.get(&x).unwrap()), [3.5, 2.5, 2.0]);
    assert_eq!(values(g.get(&y).unwrap()), [2.0, -2.0, 4.0]);
}

/// The one-pass ReLU6, hard sigmoid, hard-swish and SiLU against the same
/// functions as candle expressions (`clamp`, `silu`), value and gradient,
/// away from the kinks, and PyTorch's gradients at them.
#[test]
fn mobilenet_activations_match_candle_expressions_and_pytorch_at_the_kinks() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let v: Vec<f32> = (0..20_000)
        .map(|_| rng.random_range(-9.0f32..9.0))
        .filter(|x| {
            [-3.0f32, 0.0, 3.0, 6.0]
                .iter()
                .all(|k| (x - k).abs() > 1e-3)
        })
        .collect();
    let x = Var::from_tensor(&Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap()).unwrap();
    let r = random(&mut rng, &[v.len()]);
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        let y = f(x.as_tensor());
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(&x).unwrap().clone())
    };
    for kind in ["relu6", "hardsigmoid", "hardswish", "silu"] {
        let (y, dx) = run(&|x| ops::pointwise(x, kind).unwrap());
        let (want_y, want_dx) = ops::with_candle_ops(|| run(&|x| ops::pointwise(x, kind).unwrap()));
        assert!(
            max_err(&y, &want_y) < 1e-6,
            "{kind}: {}",
            max_err(&y, &want_y)
        );
        assert!(
            max_err(&dx, &want_dx) < 1e-5,
            "{kind} gradient: {}",
            max_err(&dx, &want_dx)
        );
    }
    // At the kinks, PyTorch's gradients: ReLU6 and the hard sigmoid are flat
    // at both ends of their slope, hard-swish takes its middle piece at 3.
    let kinks = [-3.0f32, 0.0, 3.0, 6.0];
    let x = Var::from_tensor(&Tensor::new(&kinks, &Device::Cpu).unwrap()).unwrap();
    let grad = |kind: &str| {
        let y = ops::pointwise(x.as_tensor(), kind).unwrap();
        values(y.sum_all().unwrap().backward().unwrap().get(&x).unwrap())
    };
    assert_eq!(grad("relu6"), [0.0, 0.0, 1.0, 0.0]);
    assert_eq!(grad("hardsigmoid"), [0.0, 1.0 / 6.0, 0.0, 0.0]);
    assert_eq!(grad("hardswish"), [-0.5, 0.5, 1.5, 1.0]);
}

/// The one-pass GELU against candle's `gelu_erf` (erf in f64) and its
/// gradient, across the range where erf's approximation and the exponential
/// change regime, and in the far tails, where it must stay finite.
#[test]
fn gelu_matches_candles_exact_gelu_and_its_gradient() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let mut v: Vec<f32> = (0..40_000)
        .map(|_| rng.random_range(-8.0f32..8.0))
        .collect();
    v.extend([
        0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 5.0, -5.0, 12.0, -12.0, 40.0, -40.0, 1e4, -1e4,
    ]);
    let x = Var::from_tensor(&Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap()).unwrap();
    let r = random(&mut rng, &[v.len()]);
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        let y = f(x.as_tensor());
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(&x).unwrap().clone())
    };
    let (y, dx) = run(&|x| ops::gelu(x).unwrap());
    let (want_y, want_dx) = run(&|x| x.gelu_erf().unwrap());
    assert!(values(&y).iter().chain(&values(&dx)).all(|v| v.is_finite()));
    assert!(
        max_err(&y, &want_y) < 1e-6,
        "gelu: {}",
        max_err(&y, &want_y)
    );
    assert!(
        max_err(&dx, &want_dx) < 2e-6,
        "gradient: {}",
        max_err(&dx, &want_dx)
    );
    // Left tail: GELU(-5) = -5·Φ(-5) = -1.4333e-6, to within erf's
    // absolute error (1.5e-7 of Φ's 2.9e-7 there).
    let at = |t: &Tensor, i: usize| values(t)[i];
    let i = v.iter().position(|&x| x == -5.0).unwrap();
    assert!(
        (at(&y, i) / -1.433_257e-6 - 1.0).abs() < 5e-3,
        "{}",
        at(&y, i)
    );
}
