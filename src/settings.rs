//! From flags to the config a command runs: one `resolve` per way of
//! starting. Every command goes through one of them, so the order is the
//! same everywhere:
//!
//! 1. the config file (or, resuming, the config its checkpoint stored;
//!    evaluating, the checkpoint's own);
//! 2. `--set PATH=VALUE`, in order;
//! 3. the command's dedicated flags (`--lr`, `--epochs`, …), which win;
//! 4. every check: the settings on their own ([`Config::check_settings`]),
//!    the network ([`arch::plan`]), then the settings that name its layers
//!    ([`check_against_plan`]).
//!
//! What comes out is a [`Resolved`]: the config, its plan and the notes a
//! command shows (as warnings) before it starts. Nothing here touches data
//! or a device.

use crate::arch::{self, Plan};
use crate::checkpoint;
use crate::cli::{DataArgs, RunChoices, TrainFlags};
use crate::config::{Config, DatasetName, apply_overrides, parse_assignment};
use crate::data::{Normalization, class_names};
use crate::run_state::RunState;
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// A config ready to run: every default, override and flag applied, and
/// checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub plan: Plan,
    /// What resolving changed that the user should hear about (a warm-up
    /// shortened to fit the run), shown as warnings beside the plan's own.
    pub notes: Vec<String>,
}

/// The flags of a command that change a config: applied after `--set`.
pub trait ConfigFlags {
    fn apply(&self, config: &mut Config) -> Result<()>;
}

/// No flags beyond `--set`.
impl ConfigFlags for () {
    fn apply(&self, _: &mut Config) -> Result<()> {
        Ok(())
    }
}

/// `--precision` (`cnn summary`).
impl ConfigFlags for Option<crate::config::Precision> {
    fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(p) = self {
            config.training.precision = *p;
        }
        Ok(())
    }
}

impl ConfigFlags for RunChoices {
    fn apply(&self, config: &mut Config) -> Result<()> {
        let t = &mut config.training;
        t.batch_size = self.batch_size.unwrap_or(t.batch_size);
        t.seed = self.seed.unwrap_or(t.seed);
        if let Some(path) = &self.init_from {
            t.init_from = Some(path.clone());
        }
        let d = &mut config.data;
        d.limit_train = self.limit_train.or(d.limit_train);
        if let Some(name) = &self.dataset {
            d.dataset =
                DatasetName::parse(name).map_err(|e| crate::input_error!("--dataset: {e:#}"))?;
        }
        if let Some(p) = self.precision {
            config.training.precision = p;
        }
        if let Some(n) = self.num_classes {
            set_num_classes(config, n)?;
        }
        Ok(())
    }
}

/// `--num-classes N`: `num_classes` and the last linear layer of the
/// top-level list (the head) become N.
fn set_num_classes(config: &mut Config, n: usize) -> Result<()> {
    use crate::layers::LayerKind;
    let head = config
        .layers
        .iter_mut()
        .rev()
        .find_map(|l| match &mut l.spec {
            LayerKind::Linear(linear) => Some(linear),
            _ => None,
        });
    let Some(head) = head else {
        crate::bail_input!(
            "--num-classes: the network has no linear layer in its top-level list to give {n} \
             outputs; set num_classes and the last layer's width with --set instead"
        );
    };
    head.out_features = n;
    config.num_classes = n;
    Ok(())
}

impl ConfigFlags for DataArgs {
    fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(dir) = &self.data_dir {
            config.data.dir = Some(dir.clone());
        }
        Ok(())
    }
}

/// `cnn lr-find`'s flags: those it shares with `cnn train`, and where the data is.
impl<A: ConfigFlags, B: ConfigFlags> ConfigFlags for (&A, &B) {
    fn apply(&self, config: &mut Config) -> Result<()> {
        self.0.apply(config)?;
        self.1.apply(config)
    }
}

impl ConfigFlags for TrainFlags {
    fn apply(&self, config: &mut Config) -> Result<()> {
        self.choices.apply(config)?;
        self.data.apply(config)?;
        let t = &mut config.training;
        t.epochs = self.epochs.unwrap_or(t.epochs);
        t.optimizer.lr = self.lr.unwrap_or(t.optimizer.lr);
        t.checkpoint_every = self.checkpoint_every.unwrap_or(t.checkpoint_every);
        config.data.limit_test = self.limit_test.or(config.data.limit_test);
        Ok(())
    }
}

/// A config file with `--set` assignments applied in order.
pub fn load(file: &Path, sets: &[String]) -> Result<Config> {
    let config = Config::load(file)?;
    let pairs = sets
        .iter()
        .map(|s| parse_assignment(s))
        .collect::<Result<Vec<_>>>()?;
    apply_overrides(&config, &pairs)
}

/// A new run (`train`, `lr-find`, `summary`, a sweep's points): the file,
/// `--set`, the flags, then every check.
pub fn new_run(file: &Path, sets: &[String], flags: &dyn ConfigFlags) -> Result<Resolved> {
    let mut config = load(file, sets)?;
    flags.apply(&mut config)?;
    check(config)
}

/// Every check of a config about to run, in order; a warm-up longer than
/// the run is shortened to fit (and noted).
pub fn check(mut config: Config) -> Result<Resolved> {
    let epochs = config.training.epochs;
    let notes: Vec<String> = config
        .training
        .lr_schedule
        .fit_warmup(epochs)
        .into_iter()
        .collect();
    config.check_settings()?;
    let plan = arch::plan(&config)?;
    check_against_plan(&config, &plan)?;
    Ok(Resolved {
        config,
        plan,
        notes,
    })
}

/// The checks of settings that need the network: layers named by
/// `training.freeze` and `training.param_groups`.
pub fn check_against_plan(config: &Config, plan: &Plan) -> Result<()> {
    let t = &config.training;
    let frozen = crate::train::freeze_list(plan, &t.freeze)?;
    // As `"trainable": false` on every layer is refused by the plan: a
    // freeze list that leaves nothing to train for the whole run.
    if !frozen.is_empty() && t.unfreeze_after.is_none() {
        let mut free = false;
        crate::layers::walk(&plan.layers, &mut |n| {
            free |= !n.frozen
                && n.op
                    .run()
                    .tensors()
                    .iter()
                    .any(|s| s.trainable && !frozen.contains(&format!("{}.{}", n.path, s.name)))
        });
        if !free {
            crate::bail_input!(
                "training.freeze covers every parameter the network trains, so nothing would be \
                 trained; leave at least one layer out of it, or set training.unfreeze_after to train \
                 them after that many epochs"
            );
        }
    }
    crate::optim::check_groups(plan, &t.param_groups)
}

/// The flags a resumed run takes that change its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumeFlags {
    /// `--epochs`: extends the run (never below what it has trained).
    pub epochs: Option<usize>,
    pub checkpoint_every: Option<u64>,
}

impl From<&TrainFlags> for ResumeFlags {
    fn from(f: &TrainFlags) -> Self {
        ResumeFlags {
            epochs: f.epochs,
            checkpoint_every: f.checkpoint_every,
        }
    }
}

/// What resuming a run comes to.
#[derive(Debug)]
pub enum Resume {
    /// The run has nothing left to do: why.
    Finished(String),
    Continue(Box<Resolved>),
}

/// A resumed run: the config its checkpoint stored, with `--epochs` and
/// `--checkpoint-every` applied, then every check (the same as a new
/// run's: a hand-edited checkpoint gets no less).
pub fn resume(dir: &Path, stored: &Config, state: &RunState, flags: ResumeFlags) -> Result<Resume> {
    let mut config = stored.clone();
    if let Some(epochs) = flags.epochs {
        if epochs < state.epochs_done {
            crate::bail_input!(
                "--epochs {epochs}: {} has already trained {} epochs; give at least that many",
                dir.display(),
                state.epochs_done
            );
        }
        config.training.epochs = epochs;
    }
    if let Some(n) = flags.checkpoint_every {
        config.training.checkpoint_every = n;
    }
    if state.stopped_early || state.epochs_done >= config.training.epochs {
        let why = if state.stopped_early {
            "stopped early".to_string()
        } else {
            format!("finished all {} epochs", state.epochs_done)
        };
        return Ok(Resume::Finished(why));
    }
    config.check_settings()?;
    let plan = arch::plan(&config).context("the config stored in the checkpoint")?;
    check_against_plan(&config, &plan).context("the config stored in the checkpoint")?;
    Ok(Resume::Continue(Box::new(Resolved {
        config,
        plan,
        notes: Vec::new(),
    })))
}

/// A checkpoint to evaluate (`eval`, `predict`, `export`, the pictures):
/// its config, tensors and what it knows of its data.
pub struct Evaluation {
    pub config: Config,
    pub plan: Plan,
    pub tensors: HashMap<String, Tensor>,
    /// From the checkpoint; `None` for foreign weights (computed from the data then).
    pub normalization: Option<Normalization>,
    pub classes: Vec<String>,
    pub epoch: Option<usize>,
}

/// A cnn checkpoint by its own metadata, or any safetensors file (such as
/// a PyTorch state_dict) when `config` describes its architecture.
pub fn evaluation(
    weights: &Path,
    config: Option<&Path>,
    precision: Option<crate::config::Precision>,
) -> Result<Evaluation> {
    let mut e = evaluation_as_stored(weights, config)?;
    if let Some(p) = precision
        && p != e.config.training.precision
    {
        e.config.training.precision = p;
        e.plan.precision = p;
    }
    Ok(e)
}

fn evaluation_as_stored(weights: &Path, config: Option<&Path>) -> Result<Evaluation> {
    let Some(path) = config else {
        let ck = checkpoint::load(weights)?;
        let plan = arch::plan(&ck.meta.config).context("the checkpoint's config")?;
        return Ok(Evaluation {
            plan,
            config: ck.meta.config,
            tensors: ck.weights,
            normalization: Some(ck.meta.normalization),
            classes: ck.meta.classes,
            epoch: Some(ck.meta.epoch),
        });
    };
    let config = Config::load(path)?;
    let plan = arch::plan(&config)?;
    let (_, tensors) = checkpoint::read_raw(weights)?;
    let tensors = crate::interop::import_foreign(tensors, &plan).with_context(|| {
        format!(
            "{} does not fit config {}",
            weights.display(),
            path.display()
        )
    })?;
    let classes = class_names(config.data.dataset);
    Ok(Evaluation {
        config,
        plan,
        tensors,
        normalization: None,
        classes,
        epoch: None,
    })
}
