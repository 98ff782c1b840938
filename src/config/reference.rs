//! The book's config reference (`cnn reference config`), generated from
//! the code: every layer kind of the registry with its PyTorch module, its
//! fields and their defaults; every field of `training` and `data` with its
//! default, from the config types with every default written out (and the
//! optional sections turned on by a minimal setting each, so that theirs
//! show too). What a field means is the one hand-written part, in
//! [`MEANINGS`]; a test fails when a field has none, or a meaning no field.

use super::Config;
use crate::layers::{KINDS, Layer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Optional sections, and the kinds of the tagged ones, with the smallest
/// setting that turns each on: the reference shows the fields they bring.
const EXAMPLES: &[(&str, &str)] = &[
    ("training.early_stopping", r#"{"patience": 5}"#),
    ("training.ema", r#"{"decay": 0.999}"#),
    ("training.mixup", r#"{"alpha": 0.2}"#),
    ("training.fine_tune", r#"{"head_epochs": 1}"#),
    ("training.grad_clip", r#"{"max_norm": 1.0}"#),
    (
        "training.param_groups",
        r#"[{"kinds": ["batch_norm2d"], "lr_scale": 2}]"#,
    ),
    (
        "training.lr_schedule",
        r#"{"type": "step", "step_size": 10, "gamma": 0.1}"#,
    ),
    (
        "training.lr_schedule",
        r#"{"type": "multistep", "milestones": [5, 8], "gamma": 0.1}"#,
    ),
    (
        "training.lr_schedule",
        r#"{"type": "exponential", "gamma": 0.9}"#,
    ),
    ("training.lr_schedule", r#"{"type": "cosine"}"#),
    (
        "training.lr_schedule",
        r#"{"type": "one_cycle", "max_lr": 0.1}"#,
    ),
    ("training.lr_schedule", r#"{"type": "reduce_on_plateau"}"#),
    ("data.augment.random_crop", r#"{"padding": 4}"#),
    ("data.augment.affine", r#"{"degrees": 10}"#),
    ("data.augment.random_resized_crop", r#"{}"#),
    ("data.augment.color_jitter", r#"{"brightness": 0.4}"#),
    (
        "data.augment.auto_augment",
        r#"{"policy": "rand_augment", "num_ops": 2, "magnitude": 9}"#,
    ),
    ("data.augment.random_erasing", r#"{"p": 0.25}"#),
    ("data.tta", r#"{"flip": true}"#),
];

/// What each field means, by path (`[]` for the entries of a list,
/// `lr_schedule(step)` for a field of one kind).
pub const MEANINGS: &[(&str, &str)] = &[
    ("training.epochs", "Epochs to train (`--epochs`)."),
    (
        "training.batch_size",
        "Images per optimizer step (`--batch-size`).",
    ),
    (
        "training.seed",
        "Seeds the initialisation, the validation split, the shuffles, dropout, augmentation and mixing (`--seed`).",
    ),
    (
        "training.optimizer.type",
        "`adam`, `adamw` (needs `weight_decay`) or `sgd`; PyTorch's update rules.",
    ),
    (
        "training.optimizer.lr",
        "The learning rate (`--lr`); schedules scale it.",
    ),
    (
        "training.optimizer.weight_decay",
        "Adam: L2 added to the gradient; AdamW: decoupled decay; SGD: L2. `null`: 0 (AdamW requires it stated).",
    ),
    (
        "training.optimizer.betas",
        "Adam/AdamW: the moments' decays (`null`: `[0.9, 0.999]`).",
    ),
    (
        "training.optimizer.eps",
        "Adam/AdamW: the denominator's epsilon (`null`: 1e-8).",
    ),
    ("training.optimizer.momentum", "SGD: momentum (`null`: 0)."),
    (
        "training.optimizer.nesterov",
        "SGD: Nesterov momentum (`null`: false).",
    ),
    (
        "training.optimizer.dampening",
        "SGD: dampening of the momentum (`null`: 0).",
    ),
    (
        "training.label_smoothing",
        "Cross-entropy label smoothing ε in [0, 1): the target is (1 − ε)·one-hot + ε/k.",
    ),
    (
        "training.lr_schedule.type",
        "`constant`, `step`, `multistep`, `exponential`, `cosine`, `one_cycle` or `reduce_on_plateau`.",
    ),
    (
        "training.lr_schedule.warmup_epochs",
        "A linear warm-up over this many epochs (may be fractional), before the schedule.",
    ),
    (
        "training.lr_schedule.warmup_start_factor",
        "The warm-up starts at this fraction of the rate.",
    ),
    (
        "training.lr_schedule(step).step_size",
        "`step`: epochs between decays.",
    ),
    (
        "training.lr_schedule(step).gamma",
        "`step`: the factor of each decay.",
    ),
    (
        "training.lr_schedule(multistep).milestones",
        "`multistep`: the epochs at which the rate decays.",
    ),
    (
        "training.lr_schedule(multistep).gamma",
        "`multistep`: the factor of each decay.",
    ),
    (
        "training.lr_schedule(exponential).gamma",
        "`exponential`: the factor of every epoch.",
    ),
    (
        "training.lr_schedule(cosine).t_max",
        "`cosine`: epochs of the half cosine (`null`: the whole run).",
    ),
    (
        "training.lr_schedule(cosine).eta_min",
        "`cosine`: the lowest rate.",
    ),
    (
        "training.lr_schedule(one_cycle).max_lr",
        "`one_cycle`: the peak rate (`null`: `optimizer.lr`).",
    ),
    (
        "training.lr_schedule(one_cycle).pct_start",
        "`one_cycle`: the share of the run spent rising.",
    ),
    (
        "training.lr_schedule(one_cycle).div_factor",
        "`one_cycle`: the start is `max_lr / div_factor`.",
    ),
    (
        "training.lr_schedule(one_cycle).final_div_factor",
        "`one_cycle`: the end is the start `/ final_div_factor`.",
    ),
    (
        "training.lr_schedule(one_cycle).anneal_strategy",
        "`one_cycle`: `\"cos\"`, or `\"linear\"` for a triangle.",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).monitor",
        "`reduce_on_plateau`: the metric judged (`null`: `training.monitor`).",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).factor",
        "`reduce_on_plateau`: the rate's factor at each reduction.",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).patience",
        "`reduce_on_plateau`: epochs without improvement before a reduction.",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).cooldown",
        "`reduce_on_plateau`: epochs after a reduction in which nothing counts.",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).min_lr",
        "`reduce_on_plateau`: the lowest rate.",
    ),
    (
        "training.lr_schedule(reduce_on_plateau).threshold",
        "`reduce_on_plateau`: the relative change that counts as an improvement.",
    ),
    (
        "training.monitor",
        "What picks `best.safetensors` and drives early stopping: `val_acc`, `val_loss`, `train_acc`, `train_loss` or `val_macro_f1` (without a validation split, the training metric).",
    ),
    (
        "training.early_stopping",
        "Stop when the monitored metric has not improved for a while (`null`: never).",
    ),
    (
        "training.early_stopping.patience",
        "Epochs without improvement before stopping (0: at the first).",
    ),
    (
        "training.early_stopping.min_delta",
        "The smallest change that counts as an improvement.",
    ),
    (
        "training.checkpoint_every",
        "Also write `last.safetensors` every N optimizer steps, so a crash loses at most N steps (`--checkpoint-every`; 0: at the end of each epoch).",
    ),
    (
        "training.max_loss",
        "Stop when a batch's loss passes this (or is not finite); `null` keeps only the non-finite check.",
    ),
    (
        "training.tensorboard",
        "Write TensorBoard event files to `RUN_DIR/tensorboard`.",
    ),
    (
        "training.init_from",
        "Fine-tune: start from the tensors of this checkpoint or PyTorch state_dict whose names and shapes fit (`--init-from`).",
    ),
    (
        "training.fine_tune",
        "Fine-tune in two phases (`null`: off): the head alone, then every layer with discriminative rates; replaces `freeze`, `unfreeze_after` and `param_groups`.",
    ),
    (
        "training.fine_tune.head_epochs",
        "Epochs that train only the head (the last top-level layer with parameters), the rest frozen.",
    ),
    (
        "training.fine_tune.lr_ratio",
        "Afterwards the first layer's share of the learning rate, rising geometrically to 1 at the head (0.01: fastai's `slice(lr/100, lr)`).",
    ),
    (
        "training.fine_tune.freeze_bn_stats",
        "Keep batch-norm running statistics as loaded, normalising by them in training too.",
    ),
    (
        "training.freeze",
        "Layers (`\"3\"`, `\"5.layers.0\"`) or tensors (`\"0.weight\"`) not trained, until `unfreeze_after`.",
    ),
    (
        "training.unfreeze_after",
        "Train the `freeze` layers too after this many epochs.",
    ),
    (
        "training.param_groups",
        "Other rates and weight decays for some parameters; a parameter takes the first group that selects it.",
    ),
    (
        "training.param_groups[].layers",
        "Select the parameters of these layers (and the layers inside them).",
    ),
    (
        "training.param_groups[].kinds",
        "Select the parameters of layers of these types.",
    ),
    (
        "training.param_groups[].tensors",
        "Select tensors of this name (`weight`, `bias`).",
    ),
    (
        "training.param_groups[].lr_scale",
        "The group's rate is the schedule's times this.",
    ),
    (
        "training.param_groups[].weight_decay",
        "The group's weight decay (`null`: the optimizer's).",
    ),
    (
        "training.class_weights",
        "Weights of the classes in the loss: `\"balanced\"` (n / (k · count)) or one number per class (`null`: all 1).",
    ),
    (
        "training.mixup",
        "Mixup and CutMix (timm's batch mode; `null`: off).",
    ),
    ("training.mixup.alpha", "Mixup's Beta(α, α) (0: no mixup)."),
    (
        "training.mixup.cutmix_alpha",
        "CutMix's Beta(α, α) (0: no CutMix).",
    ),
    (
        "training.mixup.prob",
        "The probability that a step is mixed.",
    ),
    (
        "training.mixup.switch_prob",
        "With both on, the probability of CutMix rather than mixup.",
    ),
    (
        "training.grad_clip",
        "Gradient clipping (`null`: none); the norm before clipping is in `steps.csv` always.",
    ),
    (
        "training.grad_clip.max_norm",
        "Scale all gradients so that their global L2 norm is at most this (PyTorch's `clip_grad_norm_`).",
    ),
    (
        "training.grad_clip.max_value",
        "Clamp each gradient value to ± this.",
    ),
    (
        "training.ema",
        "An exponential moving average of the weights, which evaluation, `best` and the checkpoints' `layers.*` use (`null`: none).",
    ),
    (
        "training.ema.decay",
        "`average = decay · average + (1 − decay) · weights` at each update.",
    ),
    ("training.ema.every", "Update every N optimizer steps."),
    (
        "training.ema.warmup",
        "Ramp the decay up as `min(decay, (1 + u) / (10 + u))` over the first updates `u`.",
    ),
    (
        "training.keep_best",
        "Also keep the K best epochs as `best-<epoch>.safetensors`.",
    ),
    (
        "training.keep_every_epochs",
        "Also keep every N-th epoch as `epoch-<epoch>.safetensors`.",
    ),
    ("training.top_k", "The k of the history's top-k accuracy."),
    (
        "training.eval_every",
        "Run the validation and test passes after every N-th epoch and the last.",
    ),
    (
        "training.precision",
        "What convolutions and linear layers multiply: `\"fp32\"`, or `\"bf16\"` (bf16-rounded operands, f32 sums; `--precision`).",
    ),
    (
        "data.dataset",
        "`mnist`, `fashion-mnist`, `cifar10` or `imagefolder` (`--dataset`).",
    ),
    (
        "data.dir",
        "Where the dataset's files are (`--data-dir`); for an image folder, the folder of class sub-folders. `null`: looked for (see *Data*).",
    ),
    (
        "data.test_dir",
        "An image folder's test images, one sub-folder per class (`null`: carved from `dir`).",
    ),
    (
        "data.val_size",
        "Validation images held out of the training images: a count, or a fraction below 1 (`null`: the dataset's default).",
    ),
    (
        "data.test_size",
        "An image folder without `test_dir`: test images carved out, a count or a fraction (`null`: 0.1).",
    ),
    (
        "data.download",
        "Fetch a missing built-in dataset from the Hugging Face Hub.",
    ),
    (
        "data.limit_train",
        "Train on only the first N training images (`--limit-train`).",
    ),
    (
        "data.limit_test",
        "Test on only the first N test images (`--limit-test`).",
    ),
    (
        "data.normalize",
        "`\"auto\"` (the training split's mean and std per channel), `\"none\"`, or `{\"mean\": [...], \"std\": [...]}`.",
    ),
    (
        "data.resize",
        "An image of another size: `\"stretch\"` to the input size, or `{\"shorter_side\": N}`: shorter side to N, aspect kept, centre crop (ImageNet models: 256 for 224).",
    ),
    ("data.shuffle", "Shuffle the training images every epoch."),
    (
        "data.drop_last",
        "Leave out the last, smaller batch of each epoch.",
    ),
    ("data.eval_batch_size", "Images per evaluation pass."),
    (
        "data.sampler",
        "`\"uniform\"`, or `\"balanced\"`: every class equally likely, drawn with replacement.",
    ),
    (
        "data.on_bad_image",
        "An image folder's unreadable file: `\"fail\"` or `\"skip\"` (named in a note).",
    ),
    (
        "data.augment.random_crop",
        "Pad, then crop back to the input size at a random offset (`null`: off).",
    ),
    (
        "data.augment.random_crop.padding",
        "Pixels added on every side.",
    ),
    (
        "data.augment.random_crop.fill",
        "The padding's value (with `padding_mode` `\"constant\"`).",
    ),
    (
        "data.augment.random_crop.padding_mode",
        "`\"constant\"` or `\"reflect\"`.",
    ),
    (
        "data.augment.horizontal_flip",
        "Mirror images left to right: a probability such as 0.5, drawn anew at every step, or `\"alternate\"`: each image in every other epoch (airbench's alternating flip; `null`: off).",
    ),
    (
        "data.augment.affine",
        "A random rotation, translation and scaling (`null`: off).",
    ),
    ("data.augment.affine.degrees", "Rotations drawn in ± this."),
    (
        "data.augment.affine.translate",
        "Shifts drawn in ± this share of the size (a number, or `[x, y]`).",
    ),
    (
        "data.augment.affine.scale",
        "Scales drawn in `[low, high]`.",
    ),
    (
        "data.augment.affine.fill",
        "The value of pixels brought in.",
    ),
    (
        "data.augment.random_resized_crop",
        "A random part of the image resized to the input size, first of all (torchvision's `RandomResizedCrop`; `null`: off). With `data.cache` `\"none\"` it is cut from the photo itself.",
    ),
    (
        "data.augment.random_resized_crop.scale",
        "The part's area as a share of the image's, drawn in `[low, high]`.",
    ),
    (
        "data.augment.random_resized_crop.ratio",
        "Its width / height, drawn log-uniformly in `[low, high]`.",
    ),
    (
        "data.augment.color_jitter",
        "Random brightness, contrast, saturation and hue in a random order (`null`: off).",
    ),
    (
        "data.augment.color_jitter.brightness",
        "Brightness times a factor drawn in `[1 - x, 1 + x]` (0: unchanged).",
    ),
    ("data.augment.color_jitter.contrast", "Contrast likewise."),
    (
        "data.augment.color_jitter.saturation",
        "Saturation likewise (RGB only).",
    ),
    (
        "data.augment.color_jitter.hue",
        "Hue turned by a share of the colour circle drawn in ± this, at most 0.5 (RGB only).",
    ),
    (
        "data.augment.auto_augment",
        "Random operations of a policy, after the colour jitter (`null`: off).",
    ),
    (
        "data.augment.auto_augment.policy",
        "`\"trivial_augment_wide\"` (one of 14 operations at a random strength) or `\"rand_augment\"` (`num_ops` at `magnitude`).",
    ),
    (
        "data.augment.auto_augment.num_ops",
        "RandAugment: operations per image (default 2).",
    ),
    (
        "data.augment.auto_augment.magnitude",
        "RandAugment: their strength, 0 to 30 (default 9).",
    ),
    (
        "data.augment.auto_augment.fill",
        "The value of pixels brought in by a shear, shift or rotation.",
    ),
    (
        "data.augment.random_erasing",
        "A random rectangle of the normalised image replaced, last of all (torchvision's `RandomErasing`; `null`: off).",
    ),
    (
        "data.augment.random_erasing.p",
        "The chance an image is erased.",
    ),
    (
        "data.augment.random_erasing.scale",
        "The rectangle's area as a share of the image's, drawn in `[low, high]`.",
    ),
    (
        "data.augment.random_erasing.ratio",
        "Its height / width, drawn log-uniformly in `[low, high]`.",
    ),
    (
        "data.augment.random_erasing.value",
        "What fills it: a number of the normalised image (0: the mean colour) or `\"random\"` (normal noise).",
    ),
    (
        "data.cache",
        "An image folder's decoded images: `\"memory\"` (all decoded once, at the input size) or `\"none\"` (each photo read from its file when a batch needs it: memory stays flat however large the folder).",
    ),
    (
        "data.workers",
        "With `data.cache` `\"none\"`: threads decoding the next batch's photos while one trains (0: none).",
    ),
    (
        "data.tta",
        "Test-time augmentation: the logits averaged over copies of each image (`null`: none).",
    ),
    ("data.tta.flip", "Also the mirrored image."),
    (
        "data.tta.translate",
        "Also the image shifted by this many pixels each way.",
    ),
];

/// The fields of the resolved `section` of `config` with their defaults,
/// by path, and whether each is required (decoding fails without it).
fn fields(config: &Value, path: &str, label: &str, out: &mut BTreeMap<String, (Value, bool)>) {
    let mut here = config;
    for seg in path.split('.') {
        here = &here[seg];
    }
    let (item, list) = match here {
        Value::Array(items) => (items.first().cloned().unwrap_or(Value::Null), true),
        v => (v.clone(), false),
    };
    let Value::Object(map) = &item else {
        return;
    };
    for (k, v) in map {
        if k == "type" && label.contains('(') {
            continue;
        }
        let mut without = config.clone();
        let mut slot = &mut without;
        for seg in path.split('.') {
            slot = &mut slot[seg];
        }
        if list {
            slot = &mut slot[0];
        }
        if let Value::Object(m) = slot {
            m.remove(k);
        }
        let name = format!("{label}{}.{k}", if list { "[]" } else { "" });
        if v.is_object() && !label.contains('(') && !list {
            fields(config, &format!("{path}.{k}"), &name, out);
            continue;
        }
        // The default is what the field becomes when left out (the
        // example may have set it); without it, the field is required.
        match Config::from_value(without) {
            Err(_) => out.insert(name, (v.clone(), true)),
            Ok(c) => {
                let mut d = c.to_value();
                for seg in path.split('.') {
                    d = d[seg].take();
                }
                if list {
                    d = d[0].take();
                }
                let default = d.get(k).cloned().unwrap_or(Value::Null);
                out.insert(name, (default, false))
            }
        };
    }
}

/// Every documented field: path → (default, required).
pub fn all_fields() -> BTreeMap<String, (Value, bool)> {
    let base = json!({
        "input_shape": [1, 28, 28], "num_classes": 10,
        "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}]
    });
    let resolved = |v: Value| {
        Config::from_value(v)
            .expect("the examples decode")
            .to_value()
    };
    let full = resolved(base.clone());
    let mut out = BTreeMap::new();
    for section in ["training", "data"] {
        fields(&full, section, section, &mut out);
    }
    for (path, example) in EXAMPLES {
        let mut v = base.clone();
        let mut slot = &mut v;
        for seg in path.split('.') {
            if slot.get(seg).is_none() {
                slot[seg] = json!({});
            }
            slot = &mut slot[seg];
        }
        let example: Value = serde_json::from_str(example).expect("an example is JSON");
        let kind = example
            .get("type")
            .and_then(Value::as_str)
            .map(String::from);
        *slot = example;
        let label = match &kind {
            Some(k) => format!("{path}({k})"),
            None => path.to_string(),
        };
        let mut found = BTreeMap::new();
        fields(&resolved(v), path, &label, &mut found);
        for (name, value) in found {
            // The kind's own fields only (the others are the section's).
            let plain = name.replacen(&label, path, 1);
            if kind.is_some() && out.contains_key(&plain) {
                continue;
            }
            out.insert(name, value);
        }
    }
    // The optional sections themselves, `null` by default.
    for (path, (v, _)) in full_leaves(&full) {
        if v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) {
            out.entry(path).or_insert((v, false));
        }
    }
    out
}

fn full_leaves(v: &Value) -> Vec<(String, (Value, bool))> {
    let mut out = Vec::new();
    for section in ["training", "data"] {
        collect(&v[section], section, &mut out);
    }
    out
}

fn collect(v: &Value, path: &str, out: &mut Vec<(String, (Value, bool))>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                collect(c, &format!("{path}.{k}"), out);
            }
        }
        other => out.push((path.to_string(), (other.clone(), false))),
    }
}

/// The page.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Config reference\n\n\
         <!-- Generated by `cnn reference config` (scripts/dev/gen-docs.sh); do not edit. -->\n\n\
         A config is one JSON object: `input_shape` (`[channels, height, width]`, required), \
         `num_classes` (required), `layers` (required), and the optional `training` and `data` \
         sections; `name` (default: the file's name) and `description` are free. Unknown fields \
         are errors. Every field's default is below; `cnn train --show-config` prints a config \
         with all of them written out. Any field can be set on the command line with \
         `--set PATH=VALUE`.\n\n## Layers\n\n\
         Sizes of a layer's input (`in_channels`, `in_features`, `num_features`) are inferred \
         and checked when stated; sizes are one number or `[height, width]`. Every layer also \
         takes `trainable` (true).\n\n\
         | type | PyTorch | fields (default) | example |\n| --- | --- | --- | --- |\n",
    );
    for k in KINDS {
        let layer: Layer = serde_json::from_str(k.example).expect("examples parse");
        let Value::Object(map) = serde_json::to_value(&layer).expect("layers serialise") else {
            continue;
        };
        let example: Value = serde_json::from_str(k.example).expect("examples parse");
        let fields: Vec<String> = map
            .iter()
            .filter(|(f, _)| *f != "type" && *f != "trainable")
            .map(|(f, v)| {
                let mut without = example.clone();
                if let Value::Object(m) = &mut without {
                    m.remove(f);
                }
                match serde_json::from_value::<Layer>(without) {
                    Err(_) => format!("`{f}` (required)"),
                    Ok(l) => {
                        let d = serde_json::to_value(&l).expect("layers serialise");
                        format!("`{f}` ({})", shown(d.get(f).unwrap_or(v)))
                    }
                }
            })
            .collect();
        let names = std::iter::once(k.name)
            .chain(k.aliases.iter().copied())
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {names} | `{}` | {} | `{}` |",
            k.torch,
            if fields.is_empty() {
                "none".into()
            } else {
                fields.join(", ")
            },
            k.example.replace('|', "\\|")
        );
    }
    let meanings: BTreeMap<&str, &str> = MEANINGS.iter().copied().collect();
    for section in ["training", "data"] {
        let _ = write!(
            out,
            "\n## {section}\n\n| field | default | meaning |\n| --- | --- | --- |\n"
        );
        for (path, (default, required)) in all_fields() {
            if !path.starts_with(section) {
                continue;
            }
            let default = if required {
                "required".to_string()
            } else {
                format!("`{}`", shown(&default))
            };
            let meaning = meanings.get(path.as_str()).copied().unwrap_or("");
            let _ = writeln!(
                out,
                "| `{}` | {default} | {meaning} |",
                path.replace("[]", "[ ]")
            );
        }
    }
    out
}

/// A value as the config writes it, `|` escaped for a table.
fn shown(v: &Value) -> String {
    v.to_string().replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_meaning_and_every_meaning_a_field() {
        let fields = all_fields();
        let meanings: BTreeMap<&str, &str> = MEANINGS.iter().copied().collect();
        let missing: Vec<&String> = fields
            .keys()
            .filter(|f| !meanings.contains_key(f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "fields without a meaning in MEANINGS: {missing:?}"
        );
        let stale: Vec<&&str> = meanings
            .keys()
            .filter(|m| !fields.contains_key(**m))
            .collect();
        assert!(stale.is_empty(), "meanings of no field: {stale:?}");
    }
}
