//! Patch whitening, a first-layer initialisation from the data (airbench,
//! Keller Jordan 2024): the filters of a conv2d layer with
//! `init: {"type": "patch_whitening"}` become the eigenvectors of the
//! covariance of the kernel-sized patches of training images (normalised
//! as the network sees them), each divided by √(eigenvalue + eps), the
//! largest eigenvalues first, followed by the same filters negated. Their
//! outputs are then uncorrelated with unit variance on the training data.
//! Which images are used is drawn from the seed; the covariance is summed
//! in fixed chunks of images, in order, so the weights are the same on any
//! number of threads.

use super::Model;
use crate::data::{Batcher, Subset};
use crate::layers::{ConvInit, Op};
use crate::rng;
use anyhow::Result;
use candle_core::Tensor;
use rand::seq::index::sample;
use rayon::prelude::*;

/// Images per chunk of the covariance sum.
const CHUNK: usize = 250;

/// Initialises every patch-whitening layer of `model` from `train`, but
/// those whose weight `keep` says was given (by `training.init_from`);
/// returns a note per layer for the user.
pub fn whiten(
    model: &Model,
    train: &Subset,
    batcher: &Batcher,
    seed: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for node in &model.plan().layers {
        let Op::Conv2d(conv) = &node.op else { continue };
        let ConvInit::PatchWhitening { eps, images } = conv.init else {
            continue;
        };
        if keep(&format!("{}.weight", node.path)) {
            continue;
        }
        let g = conv.geometry;
        let n = images.min(train.len());
        if n == 0 {
            crate::bail_input!(
                "{}: init patch_whitening needs training images, and the training split is empty",
                node.label
            );
        }
        let mut picked: Vec<u32> = sample(
            &mut rng::stream(seed, rng::Purpose::Whiten, 0),
            train.len(),
            n,
        )
        .into_iter()
        .map(|i| train.indices[i])
        .collect();
        picked.sort_unstable();
        let (kh, kw) = (g.kernel.h, g.kernel.w);
        let d = g.in_channels * kh * kw;
        let partial: Vec<Result<Vec<f64>>> = picked
            .par_chunks(CHUNK)
            .map(|chunk| {
                let (x, _) = batcher.batch(train.set, chunk)?;
                let x: Vec<f32> = x
                    .to_device(&candle_core::Device::Cpu)?
                    .flatten_all()?
                    .to_vec1()?;
                Ok(patch_moments(&x, chunk.len(), train.set.shape(), kh, kw))
            })
            .collect();
        let mut cov = vec![0f64; d * d];
        for p in partial {
            for (c, v) in cov.iter_mut().zip(p?) {
                *c += v;
            }
        }
        let [_, h, w] = train.set.shape();
        let count = n * (h + 1 - kh) * (w + 1 - kw);
        for v in cov.iter_mut() {
            *v /= count as f64;
        }
        let (values, vectors) = symmetric_eigen(&cov, d);
        let half = g.out_channels / 2;
        let mut weight = Vec::with_capacity(g.out_channels * d);
        for sign in [1.0, -1.0] {
            for k in 0..half {
                let scale = sign / (values[k].max(0.0) + eps).sqrt();
                weight.extend(vectors[k].iter().map(|&v| (v * scale) as f32));
            }
        }
        let weight = Tensor::from_vec(
            weight,
            (g.out_channels, g.in_channels, kh, kw),
            model.device(),
        )?;
        let name = format!("{}.weight", node.path);
        let map = std::collections::HashMap::from([(name, weight)]);
        model.assign(&map)?;
        notes.push(format!(
            "{}: patch whitening from {n} training images ({} patches of {d} values); eigenvalues {:.3e} to {:.3e}",
            node.label,
            count,
            values[0],
            values[half - 1]
        ));
    }
    Ok(notes)
}

/// `Σ p pᵀ` (the upper and lower triangle) over every `kh×kw` patch (stride
/// 1, no padding) of `n` images `[c, h, w]` stored one after another.
fn patch_moments(x: &[f32], n: usize, [c, h, w]: [usize; 3], kh: usize, kw: usize) -> Vec<f64> {
    let d = c * kh * kw;
    let mut sum = vec![0f64; d * d];
    let mut p = vec![0f64; d];
    for img in x.chunks(c * h * w).take(n) {
        for y in 0..=h - kh {
            for xx in 0..=w - kw {
                let mut at = 0;
                for ch in 0..c {
                    for dy in 0..kh {
                        let row = ch * h * w + (y + dy) * w + xx;
                        for dx in 0..kw {
                            p[at] = img[row + dx] as f64;
                            at += 1;
                        }
                    }
                }
                for i in 0..d {
                    let pi = p[i];
                    let out = &mut sum[i * d..];
                    for j in i..d {
                        out[j] += pi * p[j];
                    }
                }
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            sum[i * d + j] = sum[j * d + i];
        }
    }
    sum
}

/// Eigenvalues (largest first) and unit eigenvectors of the symmetric
/// `d×d` matrix `a` (row-major), by cyclic Jacobi rotations. Each vector's
/// largest component is made positive, so the result has one sign.
fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut m = a.to_vec();
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * d + j] * m[i * d + j])
            .sum();
        let scale: f64 = (0..d).map(|i| m[i * d + i] * m[i * d + i]).sum::<f64>();
        if off <= 1e-30 * scale.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * d + p], m[q * d + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (mkp, mkq) = (m[k * d + p], m[k * d + q]);
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let (mpk, mqk) = (m[p * d + k], m[q * d + k]);
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| m[j * d + j].total_cmp(&m[i * d + i]).then(i.cmp(&j)));
    let values = order.iter().map(|&i| m[i * d + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| {
            let mut col: Vec<f64> = (0..d).map(|k| v[k * d + i]).collect();
            let largest = col
                .iter()
                .copied()
                .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
            if largest < 0.0 {
                col.iter_mut().for_each(|x| *x = -*x);
            }
            col
        })
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    // numpy.linalg.eigh([[4, 1, 0], [1, 3, 1], [0, 1, 2]]): eigenvalues
    // 3 + √3, 3, 3 − √3; the vector of 3 is [1, -1, -1]/√3 (up to sign).
    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_symmetric_matrix() {
        let a = [4.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let (values, vectors) = symmetric_eigen(&a, 3);
        let s3 = 3f64.sqrt();
        for (got, want) in values.iter().zip([3.0 + s3, 3.0, 3.0 - s3]) {
            assert!((got - want).abs() < 1e-12, "{values:?}");
        }
        let v = &vectors[1];
        for (got, want) in v.iter().zip([1.0 / s3, -1.0 / s3, -1.0 / s3]) {
            assert!((got - want).abs() < 1e-12, "{v:?}");
        }
        // A v = λ v for every pair.
        for (l, v) in values.iter().zip(&vectors) {
            for r in 0..3 {
                let av: f64 = (0..3).map(|c| a[r * 3 + c] * v[c]).sum();
                assert!((av - l * v[r]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn patch_moments_sum_the_outer_products_of_every_patch() {
        // One 1×2×3 image, 1×2 patches: [1,2], [2,3], [4,5], [5,6].
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = patch_moments(&x, 1, [1, 2, 3], 1, 2);
        // Σ p0² = 1+4+16+25, Σ p0 p1 = 2+6+20+30, Σ p1² = 4+9+25+36.
        assert_eq!(m, vec![46.0, 58.0, 58.0, 74.0]);
    }
}
