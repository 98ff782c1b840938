//! Mixup and CutMix (Zhang et al. 2018; Yun et al. 2019), drawn as timm's
//! `Mixup` draws them in batch mode: one draw per step from the step's own
//! stream (`rng::Purpose::Mix`), so a resumed run mixes exactly as before.
//! Each image is paired with the image at the mirrored position of its
//! micro-batch; the loss then takes soft targets (`super::step`).

use crate::config::Mixup;
use crate::rng;
use anyhow::Result;
use candle_core::Tensor;
use rand::Rng as _;
use rand_distr::Distribution;

/// One step's mixing: the share `lam` of each image kept, the rest from its
/// partner (the image at the mirrored position of its micro-batch); for
/// CutMix, the box `[y0, y1) × [x0, x1)` taken from the partner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub lam: f64,
    pub cut: Option<[usize; 4]>,
}

/// The mixing of `step` for `h×w` images, drawn from the step's stream as
/// timm's `Mixup` draws it (batch mode): whether to mix (`prob`), which
/// kind (`switch_prob`), λ from Beta(α, α), and CutMix's box, clipped to
/// the image, with λ set to the share of the image left outside it.
pub fn draw(m: &Mixup, seed: u64, step: u64, h: usize, w: usize) -> Option<Mix> {
    let mut r = rng::stream(seed, rng::Purpose::Mix, step);
    let (apply, switch): (f64, f64) = (r.random(), r.random());
    if apply >= m.prob {
        return None;
    }
    let cut = if m.alpha > 0.0 && m.cutmix_alpha > 0.0 {
        switch < m.switch_prob
    } else {
        m.cutmix_alpha > 0.0
    };
    let alpha = if cut { m.cutmix_alpha } else { m.alpha };
    let lam = rand_distr::Beta::new(alpha, alpha)
        .expect("alpha is checked positive")
        .sample(&mut r);
    if !cut {
        return Some(Mix { lam, cut: None });
    }
    let ratio = (1.0 - lam).sqrt();
    let (ch, cw) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = r.random_range(0..h as i64);
    let cx = r.random_range(0..w as i64);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64) as usize;
    let (y0, y1) = (clip(cy - ch / 2, h), clip(cy + ch / 2, h));
    let (x0, x1) = (clip(cx - cw / 2, w), clip(cx + cw / 2, w));
    let lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
    Some(Mix {
        lam,
        cut: Some([y0, y1, x0, x1]),
    })
}

/// `x` mixed with its partners (`x` in reverse order).
pub fn images(x: &Tensor, mix: &Mix) -> Result<Tensor> {
    let partner = x.flip(&[0])?;
    Ok(match mix.cut {
        None => ((x * mix.lam)? + (partner * (1.0 - mix.lam))?)?,
        Some([y0, y1, x0, x1]) => {
            let (_, _, h, w) = x.dims4()?;
            let mut mask = vec![0f32; h * w];
            for y in y0..y1 {
                mask[y * w + x0..y * w + x1].fill(1.0);
            }
            let mask = Tensor::from_vec(mask, (1, 1, h, w), x.device())?;
            let keep = mask.affine(-1.0, 1.0)?;
            (x.broadcast_mul(&keep)? + partner.broadcast_mul(&mask)?)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn mixup(alpha: f64, cutmix_alpha: f64) -> Mixup {
        Mixup {
            alpha,
            cutmix_alpha,
            prob: 1.0,
            switch_prob: 0.5,
        }
    }

    #[test]
    fn mixing_is_drawn_per_step_and_cutmix_lam_is_the_share_outside_the_box() {
        let m = mixup(0.4, 1.0);
        assert_eq!(draw(&m, 3, 17, 28, 28), draw(&m, 3, 17, 28, 28));
        let draws: Vec<Mix> = (0..200).filter_map(|s| draw(&m, 3, s, 28, 28)).collect();
        assert_eq!(draws.len(), 200, "prob 1 mixes every step");
        let cuts = draws.iter().filter(|d| d.cut.is_some()).count();
        assert!((60..140).contains(&cuts), "switch_prob 0.5: {cuts} of 200");
        for d in &draws {
            assert!((0.0..=1.0).contains(&d.lam));
            if let Some([y0, y1, x0, x1]) = d.cut {
                let area = ((y1 - y0) * (x1 - x0)) as f64 / 784.0;
                assert!((d.lam - (1.0 - area)).abs() < 1e-12);
            }
        }
        let never = Mixup {
            prob: 0.0,
            ..mixup(0.4, 0.0)
        };
        assert!((0..50).all(|s| draw(&never, 3, s, 28, 28).is_none()));
    }

    #[test]
    fn cutmix_pastes_the_partners_box_and_mixup_blends() {
        let x = Tensor::from_vec(
            (0..2 * 16).map(|v| v as f32).collect::<Vec<_>>(),
            (2, 1, 4, 4),
            &Device::Cpu,
        )
        .unwrap();
        let cut = Mix {
            lam: 0.75,
            cut: Some([1, 3, 0, 2]),
        };
        let out: Vec<f32> = images(&x, &cut)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Image 0's rows 1-2, columns 0-1 come from image 1 (values + 16).
        assert_eq!(&out[..8], &[0., 1., 2., 3., 20., 21., 6., 7.]);
        assert_eq!(&out[16..24], &[16., 17., 18., 19., 4., 5., 22., 23.]);
        let blend = Mix {
            lam: 0.25,
            cut: None,
        };
        let out: Vec<f32> = images(&x, &blend)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(out[0], 0.25 * 0.0 + 0.75 * 16.0);
    }
}
