//! Batch normalization on the CPU as one candle custom op, with the ReLU
//! that follows it fused in.
//!
//! Training normalises with the batch's statistics (mean and biased variance
//! of each channel over the images and pixels) and updates the running
//! statistics as PyTorch does: `running = (1 - momentum)·running +
//! momentum·batch`, with the *unbiased* variance. Evaluation normalises with
//! the running statistics. Both come down to `y = relu?(x·scale + shift)`
//! per channel.
//!
//! The forward pass reads the batch twice in memory order: once for the
//! statistics (each plane's mean and squared deviations, merged per channel
//! in `f64`), once to write the output; the backward pass reads it once for
//! its two sums per channel and once more to write the input gradient. Work
//! is split into tasks of a few images whose partial results are merged in
//! task order, so the numbers do not depend on the thread count. The output
//! is contiguous whatever the input.
//!
//! The fused ReLU's mask is recomputed from the input in the backward pass
//! (the same `x·scale + shift` the forward took, so the same decisions).

use super::cpu;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// One batch-norm layer's tensors and settings.
#[derive(Debug, Clone)]
pub struct BatchNormParams {
    pub features: usize,
    /// `γ` and `β` (both or neither: `affine`).
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    /// Updated in place by every training pass.
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNormParams {
    /// Checks that every tensor holds `features` values.
    pub fn new(
        features: usize,
        weight_and_bias: Option<(Tensor, Tensor)>,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let mut tensors = vec![("running_mean", running_mean), ("running_var", running_var)];
        if let Some((w, b)) = &weight_and_bias {
            tensors.push(("weight", w));
            tensors.push(("bias", b));
        }
        for (name, t) in tensors {
            if t.dims() != [features] {
                candle_core::bail!(
                    "batch norm of {features} features: {name} has shape {:?}",
                    t.dims()
                );
            }
        }
        let (weight, bias) = weight_and_bias.unzip();
        Ok(BatchNormParams {
            features,
            weight,
            bias,
            running_mean: Var::from_tensor(running_mean)?,
            running_var: Var::from_tensor(running_var)?,
            eps,
            momentum,
        })
    }

    fn affine(&self) -> Option<(&Tensor, &Tensor)> {
        self.weight.as_ref().zip(self.bias.as_ref())
    }
}

/// Per-channel values of one call: what the forward pass normalised with
/// (`mean`, `invstd`), the resulting affine map (`scale`, `shift`), and in
/// training the batch's biased variance (for the running statistics).
#[derive(Debug, Default)]
struct Stats {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    var: Vec<f64>,
}

/// The op: `train` computes the statistics in the forward pass (and leaves
/// them in `stats`), evaluation finds them there already.
struct BatchNormOp {
    train: bool,
    relu: bool,
    eps: f64,
    stats: Arc<OnceLock<Stats>>,
    /// A 2×2 max pooling at stride 2 after the ReLU. The backward pass
    /// finds each block's maximum again from the input (the same values,
    /// so the same one), rather than keeping its place.
    pool: bool,
}

/// Sizes of a call: `n` images of `c` channels of `s` values each.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

impl Dims {
    fn of(shape: &Shape, features: usize) -> Result<Dims> {
        let dims = shape.dims();
        if dims.len() < 2 || dims[1] != features {
            candle_core::bail!(
                "batch norm of {features} features got an input of shape {dims:?}; it needs [batch, {features}, ...]"
            );
        }
        Ok(Dims {
            n: dims[0],
            c: dims[1],
            s: dims[2..].iter().product(),
        })
    }
    /// Values per channel.
    fn count(&self) -> usize {
        self.n * self.s
    }
}

/// `y = relu?(x·γ̂ + β̂)` with the batch's statistics (`train`) or the
/// running ones, `x: [batch, features, ...]`, then with `pool` a 2×2 max
/// pooling at stride 2 (`x: [batch, features, h, w]`); in training the
/// running statistics are updated. CPU and `f32` only (see `ops::batch_norm`).
pub fn forward(
    x: &Tensor,
    p: &BatchNormParams,
    train: bool,
    relu: bool,
    pool: bool,
) -> anyhow::Result<Tensor> {
    let x = x.contiguous()?;
    let d = Dims::of(x.shape(), p.features)?;
    if pool && (x.rank() != 4 || x.dim(2)? < 2 || x.dim(3)? < 2) {
        anyhow::bail!(
            "batch norm with 2×2 pooling needs [batch, channels, h ≥ 2, w ≥ 2], got {:?}",
            x.dims()
        );
    }
    let stats = Arc::new(OnceLock::new());
    if train {
        if d.count() < 2 {
            crate::bail_input!(
                "batch norm in training needs more than one value per channel, but the batch has {} image(s) of {} value(s) per channel; \
                 use a larger training.batch_size, or set data.drop_last=true if it is the last batch of an epoch",
                d.n,
                d.s
            );
        }
    } else {
        let mean = cpu::to_vec(p.running_mean.as_tensor())?;
        let var = cpu::to_vec(p.running_var.as_tensor())?;
        let invstd: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + p.eps).sqrt()) as f32)
            .collect();
        let gb = gamma_beta(p)?;
        let (gamma, beta) = gb.as_ref().map(|(g, b)| (&g[..], &b[..])).unzip();
        let (scale, shift) = affine_map(&mean, &invstd, gamma, beta);
        let _ = stats.set(Stats {
            mean,
            invstd,
            scale,
            shift,
            var: Vec::new(),
        });
    }
    let op = BatchNormOp {
        train,
        relu,
        eps: p.eps,
        stats: Arc::clone(&stats),
        pool,
    };
    let y = match p.affine() {
        Some((w, b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, op)?,
        None => x.apply_op1(op)?,
    };
    if train {
        let s = stats.get().expect("the forward pass sets the statistics");
        update_running(p, &s.mean, &s.var, d.count())?;
    }
    Ok(y)
}

/// `γ` and `β` as vectors (`None` without affine).
fn gamma_beta(p: &BatchNormParams) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    p.affine()
        .map(|(w, b)| Ok((cpu::to_vec(w)?, cpu::to_vec(b)?)))
        .transpose()
}

/// `scale = γ·invstd`, `shift = β - mean·scale`.
fn affine_map(
    mean: &[f32],
    invstd: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    (0..mean.len())
        .map(|c| {
            let scale = gamma.map_or(1.0, |g| g[c]) * invstd[c];
            (scale, beta.map_or(0.0, |b| b[c]) - mean[c] * scale)
        })
        .unzip()
}

/// PyTorch's update of the running statistics, with the unbiased variance
/// of the `count` values per channel.
fn update_running(p: &BatchNormParams, mean: &[f32], var: &[f64], count: usize) -> Result<()> {
    let m = p.momentum;
    let unbias = count as f64 / (count as f64 - 1.0);
    let old_mean = cpu::to_vec(p.running_mean.as_tensor())?;
    let old_var = cpu::to_vec(p.running_var.as_tensor())?;
    let new_mean: Vec<f32> = old_mean
        .iter()
        .zip(mean)
        .map(|(&r, &b)| ((1.0 - m) * r as f64 + m * b as f64) as f32)
        .collect();
    let new_var: Vec<f32> = old_var
        .iter()
        .zip(var)
        .map(|(&r, &b)| ((1.0 - m) * r as f64 + m * b * unbias) as f32)
        .collect();
    let dev = p.running_mean.device();
    p.running_mean
        .set(&Tensor::from_vec(new_mean, p.features, dev)?)?;
    p.running_var
        .set(&Tensor::from_vec(new_var, p.features, dev)?)?;
    Ok(())
}

impl BatchNormOp {
    fn fwd(
        &self,
        x: &[f32],
        l: &Layout,
        gamma: Option<&[f32]>,
        beta: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| format!("batch norm{} forward", self.label()));
        let features = l.shape().dims().get(1).copied().unwrap_or(0);
        let d = Dims::of(l.shape(), features)?;
        if self.pool {
            return self.fwd_pooled(x, l, d, gamma, beta);
        }
        let mut y = cpu::uninit(x.len());
        if !self.train {
            let s = self
                .stats
                .get()
                .expect("evaluation sets the statistics first");
            apply(x, &mut y, d, &s.scale, &s.shift, self.relu);
            return Ok((CpuStorage::F32(y), l.shape().clone()));
        }
        let (mean, var) = batch_stats(x, d);
        let invstd: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v + self.eps).sqrt()) as f32)
            .collect();
        let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let (scale, shift) = affine_map(&mean, &invstd, gamma, beta);
        apply(x, &mut y, d, &scale, &shift, self.relu);
        let _ = self.stats.set(Stats {
            mean,
            invstd,
            scale,
            shift,
            var,
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    /// The statistics: the running ones (evaluation), else the batch's.
    fn stats_for(&self, x: &[f32], d: Dims, gamma: Option<&[f32]>, beta: Option<&[f32]>) -> &Stats {
        self.stats.get_or_init(|| {
            let (mean, var) = batch_stats(x, d);
            let invstd: Vec<f32> = var
                .iter()
                .map(|&v| (1.0 / (v + self.eps).sqrt()) as f32)
                .collect();
            let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            let (scale, shift) = affine_map(&mean, &invstd, gamma, beta);
            Stats {
                mean,
                invstd,
                scale,
                shift,
                var,
            }
        })
    }

    /// The forward pass with the 2×2 max pooling: each pair of rows is
    /// normalised (and clamped) on the fly and pooled, so the full-size
    /// output is never written.
    fn fwd_pooled(
        &self,
        x: &[f32],
        l: &Layout,
        d: Dims,
        gamma: Option<&[f32]>,
        beta: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        let st = self.stats_for(x, d, gamma, beta);
        let out_plane = oh * ow;
        let mut y = cpu::uninit(n * c * out_plane);
        cpu::par_planes(&mut y, out_plane, |p, out| {
            let ch = p % c;
            let plane = &x[p * h * w..][..h * w];
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                let top = &plane[2 * oy * w..][..2 * ow];
                let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
                kernels::affine_pool2x2(
                    top,
                    bottom,
                    out_row,
                    st.scale[ch],
                    st.shift[ch],
                    self.relu,
                );
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn label(&self) -> &'static str {
        match (self.train, self.relu, self.pool) {
            (true, true, true) => "+relu+max pool",
            (true, false, true) => "+max pool",
            (false, true, true) => "+relu+max pool (eval)",
            (false, false, true) => "+max pool (eval)",
            (true, true, false) => "+relu",
            (true, false, false) => "",
            (false, true, false) => "+relu (eval)",
            (false, false, false) => " (eval)",
        }
    }

    /// Gradients with respect to `x` (if `need_dx`), `γ` and `β`.
    fn bwd(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let _t = crate::profile::scope(|| format!("batch norm{} backward", self.label()));
        let d = Dims::of(x.shape(), x.dim(1)?)?;
        let st = self
            .stats
            .get()
            .ok_or_else(|| candle_core::Error::Msg("batch norm backward before forward".into()))?;
        let gamma = gamma.map(cpu::to_vec).transpose()?;
        let x = x.contiguous()?;
        let dy = dy.contiguous()?;
        let m = d.count() as f64;
        // Per channel: Σ dy' and Σ dy'·(x - mean), dy' the gradient through the ReLU.
        let coefficients = |c: usize, s1: f64, s2: f64| -> (f32, f32, f32) {
            let invstd = st.invstd[c] as f64;
            let a = gamma.as_ref().map_or(1.0, |g| g[c] as f64) * invstd;
            if self.train {
                // dx = a·(dy' - Σdy'/m - (x - mean)·invstd²·Σdy'(x - mean)/m)
                let b = -a * invstd * invstd * s2 / m;
                (a as f32, b as f32, (-a * s1 / m) as f32)
            } else {
                (a as f32, 0.0, 0.0)
            }
        };
        let (sums, dx) = cpu::with_slice(&x, |xs| {
            cpu::with_slice(&dy, |dys| {
                let mut dx = if need_dx {
                    Some(cpu::uninit(xs.len()))
                } else {
                    None
                };
                let (h, w) = x.dims4().map_or((0, 0), |(_, _, h, w)| (h, w));
                let sums = if self.pool {
                    pooled_grad_sums(xs, dys, d, (h, w), st, self.relu)
                } else {
                    grad_sums(xs, dys, d, st, self.relu)
                };
                if let Some(dx) = dx.as_mut() {
                    let coef: Vec<(f32, f32, f32)> = sums
                        .iter()
                        .enumerate()
                        .map(|(c, &(s1, s2))| coefficients(c, s1, s2))
                        .collect();
                    if self.pool {
                        pooled_input_grad(xs, dys, dx, d, (h, w), st, &coef, self.relu)
                    } else {
                        input_grad(xs, dys, dx, d, st, &coef, self.relu)
                    }
                }
                Ok((sums, dx))
            })
        })?;
        let dgamma: Vec<f32> = sums
            .iter()
            .enumerate()
            .map(|(c, &(_, s2))| (s2 * st.invstd[c] as f64) as f32)
            .collect();
        let dbeta: Vec<f32> = sums.iter().map(|&(s1, _)| s1 as f32).collect();
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        Ok((
            dx,
            Tensor::from_vec(dgamma, d.c, dev)?,
            Tensor::from_vec(dbeta, d.c, dev)?,
        ))
    }
}

/// Count, mean and sum of squared deviations of some values.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// The moments of both sets together (Chan et al.'s update).
    fn merge(&mut self, o: Moments) {
        let n = self.n + o.n;
        if n == 0.0 {
            return;
        }
        let delta = o.mean - self.mean;
        self.mean += delta * o.n / n;
        self.m2 += o.m2 + delta * delta * self.n * o.n / n;
        self.n = n;
    }

    /// One plane's moments: its mean, then the squared deviations from it
    /// (two passes over a plane that is in cache: no cancellation as in
    /// `E[x²] - E[x]²`).
    fn of_plane(p: &[f32]) -> Moments {
        let n = p.len() as f64;
        if p.len() < 16 {
            let mean = p.iter().map(|&v| v as f64).sum::<f64>() / n;
            let m2 = p.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            return Moments { n, mean, m2 };
        }
        let m32 = (kernels::sum(p) as f64 / n) as f32;
        // Deviations from the rounded mean, corrected for its rounding.
        let (dev, sq) = kernels::deviations(p, m32);
        let (dev, sq) = (dev as f64, sq as f64);
        Moments {
            n,
            mean: m32 as f64 + dev / n,
            m2: (sq - dev * dev / n).max(0.0),
        }
    }
}

/// Mean and biased variance of every channel over the batch. The batch is
/// read once, in memory order: each task takes a few images and merges
/// their planes' moments per channel; the tasks' moments are merged in
/// order, so the result does not depend on the thread count.
fn batch_stats(x: &[f32], d: Dims) -> (Vec<f64>, Vec<f64>) {
    let image = d.c * d.s;
    let partials: Vec<Vec<Moments>> = x
        .par_chunks(image * cpu::IMAGES_PER_TASK)
        .map(|chunk| {
            let mut m = vec![Moments::default(); d.c];
            for img in chunk.chunks_exact(image) {
                for (c, plane) in img.chunks_exact(d.s).enumerate() {
                    m[c].merge(Moments::of_plane(plane));
                }
            }
            m
        })
        .collect();
    let mut total = vec![Moments::default(); d.c];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            t.merge(p);
        }
    }
    total.iter().map(|m| (m.mean, m.m2 / m.n)).unzip()
}

/// `y = relu?(x·scale + shift)` per channel, in parallel over images.
fn apply(x: &[f32], y: &mut [f32], d: Dims, scale: &[f32], shift: &[f32], relu: bool) {
    cpu::par_images(y, d.c * d.s, |first, ys| {
        let xs = &x[first * d.c * d.s..][..ys.len()];
        for (k, (xp, yp)) in xs
            .chunks_exact(d.s)
            .zip(ys.chunks_exact_mut(d.s))
            .enumerate()
        {
            let c = k % d.c;
            kernels::affine(xp, yp, scale[c], shift[c], relu);
        }
    });
}

/// Per channel, `Σ g` and `Σ g·(x - mean)` with `g` the gradient through
/// the ReLU, in one read of the batch in memory order (tasks of a few
/// images, added in order as in [`batch_stats`]).
fn grad_sums(x: &[f32], dy: &[f32], d: Dims, st: &Stats, relu: bool) -> Vec<(f64, f64)> {
    let image = d.c * d.s;
    let per_task = image * cpu::IMAGES_PER_TASK;
    let partials: Vec<Vec<(f64, f64)>> = x
        .par_chunks(per_task)
        .zip(dy.par_chunks(per_task))
        .map(|(xc, dc)| {
            let mut sums = vec![(0f64, 0f64); d.c];
            for (xi, di) in xc.chunks_exact(image).zip(dc.chunks_exact(image)) {
                for (c, (xp, dp)) in xi.chunks_exact(d.s).zip(di.chunks_exact(d.s)).enumerate() {
                    let (s1, s2) =
                        kernels::grad_sums(xp, dp, st.mean[c], st.scale[c], st.shift[c], relu);
                    sums[c].0 += s1 as f64;
                    sums[c].1 += s2 as f64;
                }
            }
            sums
        })
        .collect();
    let mut total = vec![(0f64, 0f64); d.c];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    total
}

/// The input gradient plane by plane, in parallel over images.
fn input_grad(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    d: Dims,
    st: &Stats,
    coef: &[(f32, f32, f32)],
    relu: bool,
) {
    cpu::par_images(dx, d.c * d.s, |first, out| {
        let at = first * d.c * d.s;
        let (xs, dys) = (&x[at..][..out.len()], &dy[at..][..out.len()]);
        for (k, ((xp, dp), op)) in xs
            .chunks_exact(d.s)
            .zip(dys.chunks_exact(d.s))
            .zip(out.chunks_exact_mut(d.s))
            .enumerate()
        {
            let c = k % d.c;
            let (a, b, k) = coef[c];
            let params = [st.mean[c], st.scale[c], st.shift[c], a, b, k];
            kernels::input_grad(xp, dp, op, params, relu);
        }
    });
}

/// [`grad_sums`] through the 2×2 max pooling: only the maximum of each
/// block gets a gradient (the pooled output's), so the sums run over the
/// pooled gradient and the blocks' maxima, found again as the forward pass
/// found them.
fn pooled_grad_sums(
    x: &[f32],
    dy: &[f32],
    d: Dims,
    (h, w): (usize, usize),
    st: &Stats,
    relu: bool,
) -> Vec<(f64, f64)> {
    let (oh, ow) = (h / 2, w / 2);
    let (image, pooled) = (d.c * h * w, d.c * oh * ow);
    let partials: Vec<Vec<(f64, f64)>> = (0..d.n.div_ceil(cpu::IMAGES_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let mut sums = vec![(0f64, 0f64); d.c];
            let images = t * cpu::IMAGES_PER_TASK..((t + 1) * cpu::IMAGES_PER_TASK).min(d.n);
            for i in images {
                for (c, sum) in sums.iter_mut().enumerate() {
                    let plane = &x[i * image + c * h * w..][..h * w];
                    let g = &dy[i * pooled + c * oh * ow..][..oh * ow];
                    let params = [st.mean[c], st.scale[c], st.shift[c]];
                    for (oy, g) in g.chunks_exact(ow).enumerate() {
                        let top = &plane[2 * oy * w..][..2 * ow];
                        let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
                        let (s1, s2) = kernels::pool_grad_sums(top, bottom, g, params, relu);
                        sum.0 += s1 as f64;
                        sum.1 += s2 as f64;
                    }
                }
            }
            sums
        })
        .collect();
    let mut total = vec![(0f64, 0f64); d.c];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    total
}

/// [`input_grad`] through the 2×2 max pooling: `a·g + b·(x - mean) + k`
/// at each block's maximum, `b·(x - mean) + k` everywhere else.
#[allow(clippy::too_many_arguments)]
fn pooled_input_grad(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    d: Dims,
    (h, w): (usize, usize),
    st: &Stats,
    coef: &[(f32, f32, f32)],
    relu: bool,
) {
    let (oh, ow) = (h / 2, w / 2);
    cpu::par_planes(dx, h * w, |p, out| {
        let c = p % d.c;
        let plane = &x[p * h * w..][..h * w];
        let (a, b, k) = coef[c];
        let params = [st.mean[c], st.scale[c], st.shift[c], a, b, k];
        if 2 * oh != h || 2 * ow != w {
            // Rows and columns no block covers get no gradient from above.
            kernels::input_grad_no_dy(plane, out, [st.mean[c], b, k]);
        }
        let g = &dy[p * oh * ow..][..oh * ow];
        for (oy, g) in g.chunks_exact(ow).enumerate() {
            let (xt, xb) = plane[2 * oy * w..][..2 * w].split_at(w);
            let (dt, db) = out[2 * oy * w..][..2 * w].split_at_mut(w);
            kernels::pool_input_grad(
                &xt[..2 * ow],
                &xb[..2 * ow],
                g,
                &mut dt[..2 * ow],
                &mut db[..2 * ow],
                params,
                relu,
            );
        }
    });
}

/// The loops over one plane, compiled for AVX-512 and AVX2 as well as the
/// baseline, the best picked at run time. Each keeps 16 partial sums (or
/// works 16 values at a time) in a fixed order and never fuses a multiply
/// with an add, so every instruction set gives the same bits.
mod kernels {
    const L: usize = 16;

    use crate::ops::kernels::simd;

    /// Adds up 16 lanes, then the lanes pairwise, then the tail.
    #[inline(always)]
    fn reduce(acc: [f32; L], tail: f32) -> f32 {
        let mut a = acc;
        let mut w = L / 2;
        while w > 0 {
            for i in 0..w {
                a[i] += a[i + w];
            }
            w /= 2;
        }
        a[0] + tail
    }

    simd! {
        /// `Σ x`.
        pub fn sum(x: &[f32]) -> f32 {
            let mut acc = [0f32; L];
            let chunks = x.chunks_exact(L);
            let tail: f32 = chunks.remainder().iter().sum();
            for ch in chunks {
                for i in 0..L {
                    acc[i] += ch[i];
                }
            }
            reduce(acc, tail)
        }
    }

    simd! {
        /// `(Σ (x - m), Σ (x - m)²)`.
        pub fn deviations(x: &[f32], m: f32) -> (f32, f32) {
            let (mut d, mut s) = ([0f32; L], [0f32; L]);
            let chunks = x.chunks_exact(L);
            let (mut td, mut ts) = (0f32, 0f32);
            for &v in chunks.remainder() {
                let e = v - m;
                td += e;
                ts += e * e;
            }
            for ch in chunks {
                for i in 0..L {
                    let e = ch[i] - m;
                    d[i] += e;
                    s[i] += e * e;
                }
            }
            (reduce(d, td), reduce(s, ts))
        }
    }

    simd! {
        /// `y = relu?(x·scale + shift)`.
        pub fn affine(x: &[f32], y: &mut [f32], scale: f32, shift: f32, relu: bool) {
            for (o, &v) in y.iter_mut().zip(x) {
                let z = v * scale + shift;
                *o = if !relu || z > 0.0 { z } else { 0.0 };
            }
        }
    }

    /// `relu?(v·scale + shift)`.
    #[inline(always)]
    fn norm(v: f32, scale: f32, shift: f32, relu: bool) -> f32 {
        let z = v * scale + shift;
        if !relu || z > 0.0 { z } else { 0.0 }
    }

    /// Whether `b` beats `a`, which comes first: larger, or the first NaN.
    #[inline(always)]
    fn later(a: f32, b: f32) -> bool {
        (b > a) | (b.is_nan() & !a.is_nan())
    }

    /// The winner of a 2×2 block `[v0, v1; v2, v3]` of normalised values,
    /// as `(value, top?, left?)`: the first in reading order on a tie, or
    /// the first NaN, as a scan would find it, but as a tournament (the top
    /// pair, the bottom pair, then the two winners) that vectorises.
    #[inline(always)]
    fn block_max(v0: f32, v1: f32, v2: f32, v3: f32) -> (f32, bool, bool) {
        let r01 = later(v0, v1);
        let m01 = if r01 { v1 } else { v0 };
        let r23 = later(v2, v3);
        let m23 = if r23 { v3 } else { v2 };
        let lower = later(m01, m23);
        let m = if lower { m23 } else { m01 };
        let right = if lower { r23 } else { r01 };
        (m, !lower, !right)
    }

    simd! {
        /// [`affine`] (with the ReLU), then the maximum of each 2×2 block of
        /// the two rows.
        pub fn affine_pool2x2(
            top: &[f32],
            bottom: &[f32],
            out: &mut [f32],
            scale: f32,
            shift: f32,
            relu: bool,
        ) {
            for ((t, b), o) in top
                .chunks_exact(2)
                .zip(bottom.chunks_exact(2))
                .zip(out.iter_mut())
            {
                let v0 = norm(t[0], scale, shift, relu);
                let v1 = norm(t[1], scale, shift, relu);
                let v2 = norm(b[0], scale, shift, relu);
                let v3 = norm(b[1], scale, shift, relu);
                *o = block_max(v0, v1, v2, v3).0;
            }
        }
    }

    simd! {
        /// [`grad_sums`] through the 2×2 pooling of two rows: `(Σ g, Σ g·(x -
        /// mean))` over the blocks' maxima, `g` the pooled gradient `dy`
        /// (zero where the ReLU clamped the maximum); `p = [mean, scale, shift]`.
        pub fn pool_grad_sums(top: &[f32], bottom: &[f32], dy: &[f32], p: [f32; 3], relu: bool) -> (f32, f32) {
            let [mean, scale, shift] = p;
            // The gradient and deviation at block `j`'s maximum.
            let term = |t0: f32, t1: f32, b0: f32, b1: f32, gv: f32| -> (f32, f32) {
                let (m, upper, left) = block_max(
                    norm(t0, scale, shift, relu),
                    norm(t1, scale, shift, relu),
                    norm(b0, scale, shift, relu),
                    norm(b1, scale, shift, relu),
                );
                let xt = if left { t0 } else { t1 };
                let xb = if left { b0 } else { b1 };
                let xm = if upper { xt } else { xb };
                let g = if !relu || m > 0.0 { gv } else { 0.0 };
                (g, g * (xm - mean))
            };
            let (mut s1, mut s2) = ([0f32; L], [0f32; L]);
            let chunks = top
                .chunks_exact(2 * L)
                .zip(bottom.chunks_exact(2 * L))
                .zip(dy.chunks_exact(L));
            for ((tc, bc), gc) in chunks {
                for i in 0..L {
                    let (g, e) = term(tc[2 * i], tc[2 * i + 1], bc[2 * i], bc[2 * i + 1], gc[i]);
                    s1[i] += g;
                    s2[i] += e;
                }
            }
            let (mut t1, mut t2) = (0f32, 0f32);
            for j in dy.len() / L * L..dy.len() {
                let (g, e) = term(top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1], dy[j]);
                t1 += g;
                t2 += e;
            }
            (reduce(s1, t1), reduce(s2, t2))
        }
    }

    simd! {
        /// [`input_grad`] through the 2×2 pooling of two rows (`x` in `top`,
        /// `bottom`; `dx` likewise): `a·g` at each block's maximum, plus
        /// `b·(x - mean) + k` everywhere; `p = [mean, scale, shift, a, b, k]`.
        pub fn pool_input_grad(
            top: &[f32],
            bottom: &[f32],
            dy: &[f32],
            dtop: &mut [f32],
            dbottom: &mut [f32],
            p: [f32; 6],
            relu: bool,
        ) {
            let [mean, scale, shift, a, b, k] = p;
            let blocks = top
                .chunks_exact(2)
                .zip(bottom.chunks_exact(2))
                .zip(dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2)))
                .zip(dy);
            for (((t, bt), (dt, db)), &gv) in blocks {
                let (m, upper, left) = block_max(
                    norm(t[0], scale, shift, relu),
                    norm(t[1], scale, shift, relu),
                    norm(bt[0], scale, shift, relu),
                    norm(bt[1], scale, shift, relu),
                );
                let g = if !relu || m > 0.0 { gv } else { 0.0 };
                let g0 = if upper & left { g } else { 0.0 };
                let g1 = if upper & !left { g } else { 0.0 };
                let g2 = if !upper & left { g } else { 0.0 };
                let g3 = if !upper & !left { g } else { 0.0 };
                dt[0] = a * g0 + (b * (t[0] - mean) + k);
                dt[1] = a * g1 + (b * (t[1] - mean) + k);
                db[0] = a * g2 + (b * (bt[0] - mean) + k);
                db[1] = a * g3 + (b * (bt[1] - mean) + k);
            }
        }
    }

    simd! {
        /// `dx = b·(x - mean) + k`: [`input_grad`] where no gradient comes
        /// from above; `p = [mean, b, k]`.
        pub fn input_grad_no_dy(x: &[f32], dx: &mut [f32], p: [f32; 3]) {
            let [mean, b, k] = p;
            for (o, &v) in dx.iter_mut().zip(x) {
                *o = b * (v - mean) + k;
            }
        }
    }

    simd! {
        /// `(Σ g, Σ g·(x - mean))` with `g = dy`, or with the ReLU `g = dy`
        /// where `x·scale + shift > 0` and 0 elsewhere.
        pub fn grad_sums(x: &[f32], dy: &[f32], mean: f32, scale: f32, shift: f32, relu: bool) -> (f32, f32) {
            let (mut s1, mut s2) = ([0f32; L], [0f32; L]);
            let (mut t1, mut t2) = (0f32, 0f32);
            let n = x.len().min(dy.len());
            let whole = n / L * L;
            let gate = |v: f32, g: f32| if !relu || v * scale + shift > 0.0 { g } else { 0.0 };
            for at in (0..whole).step_by(L) {
                let (xc, dc) = (&x[at..at + L], &dy[at..at + L]);
                for i in 0..L {
                    let g = gate(xc[i], dc[i]);
                    s1[i] += g;
                    s2[i] += g * (xc[i] - mean);
                }
            }
            for i in whole..n {
                let g = gate(x[i], dy[i]);
                t1 += g;
                t2 += g * (x[i] - mean);
            }
            (reduce(s1, t1), reduce(s2, t2))
        }
    }

    simd! {
        /// `dx = a·g + b·(x - mean) + k`, `g` the gradient through the ReLU
        /// as in [`grad_sums`]; `p = [mean, scale, shift, a, b, k]`.
        pub fn input_grad(x: &[f32], dy: &[f32], dx: &mut [f32], p: [f32; 6], relu: bool) {
            let [mean, scale, shift, a, b, k] = p;
            for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                let g = if !relu || v * scale + shift > 0.0 { g } else { 0.0 };
                *o = a * g + (b * (v - mean) + k);
            }
        }
    }
}

impl CustomOp1 for BatchNormOp {
    fn name(&self) -> &'static str {
        "cnn-batch-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.fwd(cpu::slice(s, l)?, l, None, None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.bwd(x, None, grad, true)?.0)
    }
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "cnn-batch-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(
            cpu::slice(s1, l1)?,
            l1,
            Some(cpu::slice(s2, l2)?),
            Some(cpu::slice(s3, l3)?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dg, db) = self.bwd(x, Some(gamma), grad, x.track_op())?;
        Ok((dx, Some(dg), Some(db)))
    }
}
