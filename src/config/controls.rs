//! The training controls of the `training` section beyond the optimizer and
//! the schedule: parameter groups, gradient clipping, an average of the
//! weights (EMA), mixup and CutMix, class weights, freezing and the
//! checkpoint policy. Each setting and its checks; the code that runs them
//! is in `optim`, `train` and `model`.

use crate::bail_input;
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Settings for some of the parameters: those of the listed layers, of
/// the listed kinds and with the listed tensor names (every selector given
/// must match). A parameter takes the first group that selects it; the
/// others keep the optimizer's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// Layer paths as `filters --layer` takes them (`3`, `5.layers.0`):
    /// their parameters and those of the layers inside them.
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    /// Layer kinds (`batch_norm2d`).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Tensor names (`weight`, `bias`).
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
    /// The group's learning rate is the schedule's times this.
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// The group's weight decay, instead of `training.optimizer.weight_decay`.
    #[serde(default)]
    pub weight_decay: Option<f64>,
}

fn one() -> f64 {
    1.0
}

/// Clipping of each step's gradients, after they are computed and before
/// the optimizer uses them. The global norm before clipping is logged in
/// `steps.csv` either way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradClip {
    /// Scale all gradients together so that their global L2 norm is at most
    /// this (PyTorch's `clip_grad_norm_`).
    #[serde(default)]
    pub max_norm: Option<f64>,
    /// Clamp every gradient value to [-v, v] (`clip_grad_value_`).
    #[serde(default)]
    pub max_value: Option<f64>,
}

/// An exponential moving average of the weights, updated after optimizer
/// steps; evaluation, `best.safetensors` and the history use it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ema {
    /// `average = decay · average + (1 - decay) · weights`, per update.
    pub decay: f64,
    /// Update every N optimizer steps.
    #[serde(default = "one_step")]
    pub every: u64,
    /// Ramp the decay up as `min(decay, (1 + u) / (10 + u))` over the first
    /// updates `u`, so that the start does not weigh the initial weights.
    #[serde(default = "yes")]
    pub warmup: bool,
}

fn one_step() -> u64 {
    1
}
fn yes() -> bool {
    true
}

/// Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): each training
/// step, with probability `prob`, mixes every image with another of its
/// micro-batch and the targets in the same proportion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixup {
    /// Mixup's Beta(α, α); 0 turns mixup off.
    #[serde(default)]
    pub alpha: f64,
    /// CutMix's Beta(α, α); 0 turns CutMix off.
    #[serde(default)]
    pub cutmix_alpha: f64,
    /// Probability that a step mixes at all.
    #[serde(default = "one")]
    pub prob: f64,
    /// With both on, the probability that a mixing step uses CutMix.
    #[serde(default = "half")]
    pub switch_prob: f64,
}

fn half() -> f64 {
    0.5
}

/// Weights of the classes in the training loss.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// `n / (classes · n_c)` from the training split (scikit-learn's
    /// "balanced"): rare classes weigh more.
    Balanced,
    /// One weight per class.
    Given(Vec<f64>),
}

impl Serialize for ClassWeights {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClassWeights::Balanced => s.serialize_str("balanced"),
            ClassWeights::Given(w) => w.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "\"balanced\" or a list of one weight per class")]
        enum Repr {
            Word(String),
            List(Vec<f64>),
        }
        match Repr::deserialize(d)? {
            Repr::Word(w) if w == "balanced" => Ok(ClassWeights::Balanced),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "\"{w}\" is not a class weighting; give \"balanced\" or a list of one weight per class"
            ))),
            Repr::List(v) => Ok(ClassWeights::Given(v)),
        }
    }
}

impl ClassWeights {
    /// The weight of each class: the given ones, or "balanced" from the
    /// number of training images of each class (`counts`).
    pub fn resolve(&self, counts: &[usize]) -> Vec<f32> {
        match self {
            ClassWeights::Given(w) => w.iter().map(|&v| v as f32).collect(),
            ClassWeights::Balanced => {
                let n: usize = counts.iter().sum();
                let k = counts.len();
                counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            (n as f64 / (k * c) as f64) as f32
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Fine-tuning a pretrained network in two phases, as fastai's
/// `fine_tune`: first only the head (the last layer with parameters of the
/// top-level list) trains, the rest frozen; then every layer, with rates
/// that fall from the head back to the first layer (discriminative rates).
/// What it sets is `training.freeze`, `unfreeze_after` and `param_groups`
/// in effect, so it takes the place of those three.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTune {
    /// Epochs that train the head alone.
    #[serde(default = "one_epoch")]
    pub head_epochs: usize,
    /// After them, the first layer's learning rate is the schedule's times
    /// this, rising geometrically layer by layer to the full rate at the
    /// head (fastai's `slice(lr/100, lr)` is 0.01); 1 trains all alike.
    #[serde(default = "default_lr_ratio")]
    pub lr_ratio: f64,
    /// Keep every batch-norm layer's running statistics as the pretrained
    /// weights have them (normalising by them in training too, as
    /// PyTorch's `module.eval()` on the batch norms).
    #[serde(default)]
    pub freeze_bn_stats: bool,
}

fn one_epoch() -> usize {
    1
}
fn default_lr_ratio() -> f64 {
    0.01
}

/// The largest `param_groups.*.lr_scale`: past it no rate trains.
const MAX_LR_SCALE: f64 = 1000.0;
/// The widest ratio of the positive class weights.
const MAX_WEIGHT_RATIO: f64 = 1e6;

/// Checks the controls of the training section for a network of
/// `classes` outputs; every message names the field.
pub fn check(t: &super::TrainingConfig, classes: usize) -> Result<()> {
    for (i, g) in t.param_groups.iter().enumerate() {
        let field = format!("training.param_groups.{i}");
        if g.layers.is_none() && g.kinds.is_none() && g.tensors.is_none() {
            bail_input!(
                "{field} selects nothing: give \"layers\", \"kinds\" or \"tensors\", e.g. \
                 {{\"kinds\": [\"batch_norm2d\"], \"tensors\": [\"bias\"], \"weight_decay\": 0}}"
            );
        }
        for (name, list) in [
            ("layers", &g.layers),
            ("kinds", &g.kinds),
            ("tensors", &g.tensors),
        ] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                bail_input!("{field}.{name} is empty; list at least one or leave it out");
            }
        }
        if !(g.lr_scale.is_finite() && g.lr_scale > 0.0) {
            bail_input!(
                "{field}.lr_scale is {}; it must be a positive number (1 keeps the rate; to keep \
                 parameters still, freeze them with training.freeze)",
                g.lr_scale
            );
        }
        if g.lr_scale > MAX_LR_SCALE {
            bail_input!(
                "{field}.lr_scale is {}; a scale above {MAX_LR_SCALE} multiplies the rate past anything \
                 that trains (the rate itself is training.optimizer.lr); use at most {MAX_LR_SCALE}",
                g.lr_scale
            );
        }
        if let Some(wd) = g.weight_decay
            && !(wd.is_finite() && wd >= 0.0)
        {
            bail_input!("{field}.weight_decay is {wd}; it must be 0 or positive");
        }
    }
    if let Some(c) = &t.grad_clip {
        match (c.max_norm, c.max_value) {
            (None, None) | (Some(_), Some(_)) => bail_input!(
                "training.grad_clip needs exactly one of max_norm (clip the global norm, e.g. 1.0) and \
                 max_value (clamp each value, e.g. 0.5)"
            ),
            (Some(v), None) | (None, Some(v)) if !(v.is_finite() && v > 0.0) => {
                let which = if c.max_norm.is_some() {
                    "max_norm"
                } else {
                    "max_value"
                };
                bail_input!("training.grad_clip.{which} is {v}; it must be a positive number");
            }
            _ => {}
        }
    }
    if let Some(e) = &t.ema {
        if !(e.decay.is_finite() && (0.0..1.0).contains(&e.decay)) {
            bail_input!(
                "training.ema.decay is {}; it must be in [0, 1), e.g. 0.999",
                e.decay
            );
        }
        if e.every == 0 {
            bail_input!("training.ema.every is 0; update the average every 1 or more steps");
        }
    }
    if let Some(m) = &t.mixup {
        for (name, a) in [("alpha", m.alpha), ("cutmix_alpha", m.cutmix_alpha)] {
            if !(a.is_finite() && a >= 0.0) {
                bail_input!(
                    "training.mixup.{name} is {a}; it must be 0 (off) or positive, e.g. 0.2"
                );
            }
        }
        if m.alpha == 0.0 && m.cutmix_alpha == 0.0 {
            bail_input!(
                "training.mixup has alpha and cutmix_alpha both 0, so it would mix nothing; set alpha \
                 (mixup, e.g. 0.2) or cutmix_alpha (CutMix, e.g. 1.0), or remove training.mixup"
            );
        }
        for (name, p) in [("prob", m.prob), ("switch_prob", m.switch_prob)] {
            if !(0.0..=1.0).contains(&p) {
                bail_input!("training.mixup.{name} is {p}; it is a probability in [0, 1]");
            }
        }
    }
    if let Some(ClassWeights::Given(w)) = &t.class_weights {
        if w.len() != classes {
            bail_input!(
                "training.class_weights lists {} weights but the network has {classes} classes; give \
                 one weight per class, or \"balanced\"",
                w.len()
            );
        }
        if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            bail_input!("training.class_weights holds {bad}; weights must be 0 or positive");
        }
        if w.iter().all(|v| *v == 0.0) {
            bail_input!("training.class_weights are all 0, so nothing would be learned");
        }
        let positive = w.iter().copied().filter(|v| *v > 0.0);
        let (lo, hi) = positive.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi / lo > MAX_WEIGHT_RATIO {
            bail_input!(
                "training.class_weights range from {lo} to {hi}, more than {MAX_WEIGHT_RATIO:e} apart: \
                 the loss of the heaviest class swamps the others until training diverges; keep the \
                 weights within {MAX_WEIGHT_RATIO:e} of each other (\"balanced\" gives n / (k · count))"
            );
        }
    }
    if let Some(f) = &t.fine_tune {
        if !t.freeze.is_empty() || t.unfreeze_after.is_some() || !t.param_groups.is_empty() {
            bail_input!(
                "training.fine_tune sets what is frozen and the rates per layer itself; remove \
                 training.freeze, training.unfreeze_after and training.param_groups, or fine_tune"
            );
        }
        if f.head_epochs >= t.epochs {
            bail_input!(
                "training.fine_tune.head_epochs is {} but the run has only {} epochs, so the layers \
                 before the head would never train; lower it or raise training.epochs",
                f.head_epochs,
                t.epochs
            );
        }
        if !(f.lr_ratio > 0.0 && f.lr_ratio <= 1.0) {
            bail_input!(
                "training.fine_tune.lr_ratio is {}; give the first layer's share of the learning \
                 rate, in (0, 1] (0.01: a hundredth; 1: every layer alike)",
                f.lr_ratio
            );
        }
    }
    if t.unfreeze_after.is_some() && t.freeze.is_empty() {
        bail_input!(
            "training.unfreeze_after is set but training.freeze is empty; list the layers to freeze \
             until then (e.g. [\"0\", \"2\"]), or remove unfreeze_after"
        );
    }
    if let Some(n) = t.unfreeze_after
        && n >= t.epochs
    {
        bail_input!(
            "training.unfreeze_after is {n} but the run has only {} epochs, so the layers would never \
             be unfrozen; lower it, or leave it out to keep them frozen",
            t.epochs
        );
    }
    if t.top_k == 0 {
        bail_input!("training.top_k is 0; give the k of the top-k accuracy, such as 5");
    }
    if t.eval_every == 0 {
        bail_input!(
            "training.eval_every is 0; give N to evaluate after every N-th epoch (1: every epoch)"
        );
    }
    if t.eval_every > 1 {
        let needs = if t.early_stopping.is_some() {
            Some("training.early_stopping")
        } else if matches!(
            t.lr_schedule.kind,
            crate::config::ScheduleKind::ReduceOnPlateau { .. }
        ) {
            Some("training.lr_schedule reduce_on_plateau")
        } else {
            None
        };
        if let Some(what) = needs {
            bail_input!(
                "training.eval_every is {} but {what} judges every epoch's metrics; remove eval_every \
                 or {what}",
                t.eval_every
            );
        }
    }
    Ok(())
}

/// Which training images an epoch visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Every training image once (shuffled with `data.shuffle`).
    #[default]
    Uniform,
    /// As many images as the training split holds, drawn with replacement
    /// so that every class is equally likely (PyTorch's
    /// `WeightedRandomSampler` with weights `1 / n_class`).
    Balanced,
}

/// Test-time augmentation: the logits of each validation and test image
/// averaged over copies of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tta {
    /// Average with the mirrored image (not for digits or text).
    #[serde(default)]
    pub flip: bool,
    /// Also average (half and half) with the image shifted by this many
    /// pixels up-left and down-right, its border reflected.
    #[serde(default)]
    pub translate: usize,
}

impl Tta {
    /// Checks the settings against the input `[c, h, w]`.
    pub fn check(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        if !self.flip && self.translate == 0 {
            bail_input!(
                "data.tta has flip false and translate 0, so it would change nothing; set flip: true \
                 and/or translate: 1, or remove data.tta"
            );
        }
        if self.translate >= h.min(w) {
            bail_input!(
                "data.tta.translate is {} but the images are {h}×{w}; shift by fewer pixels than the \
                 image, such as 1 or 2",
                self.translate
            );
        }
        Ok(())
    }
}
