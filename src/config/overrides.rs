//! `--set PATH=VALUE`: change one field of a config by its dotted path
//! (`training.optimizer.lr`, `layers.0.out_channels`, `input_shape.0`).
//!
//! The config is first written out in full (every default present), so every
//! settable field has a path; a path that does not exist is an error listing
//! what does. The value is read as JSON when it parses (`0.01`, `true`,
//! `[3,5]`, `null`) and as a string otherwise (`sgd`). The result is decoded
//! again, which type-checks every change.

use super::Config;
use crate::bail_input;
use anyhow::Result;
use serde_json::Value;

/// Splits `PATH=VALUE`.
pub fn parse_assignment(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((path, value)) if !path.trim().is_empty() => {
            Ok((path.trim().to_string(), value.to_string()))
        }
        _ => bail_input!("--set {s}: expected PATH=VALUE, e.g. --set training.optimizer.lr=0.01"),
    }
}

/// Applies `(path, value)` pairs in order and decodes the result.
pub fn apply_overrides(config: &Config, sets: &[(String, String)]) -> Result<Config> {
    if sets.is_empty() {
        return Ok(config.clone());
    }
    let mut value = config.to_value();
    for (path, raw) in sets {
        let new = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        let slot =
            locate(&mut value, path).map_err(|e| crate::input_error!("--set {path}={raw}: {e}"))?;
        *slot = new;
    }
    let mut out = Config::from_value(value).map_err(|e| {
        let list: Vec<String> = sets.iter().map(|(p, v)| format!("{p}={v}")).collect();
        crate::input_error!("after --set {}: {e}", list.join(" --set "))
    })?;
    out.name = out.name.or_else(|| config.name.clone());
    Ok(out)
}

/// The value at a dotted path of `root` (as `--set` reads paths), if any.
pub fn value_at(root: &Value, path: &str) -> Option<Value> {
    let mut root = root.clone();
    locate(&mut root, path).ok().cloned()
}

/// Finds the value at a dotted path (`a.b.0.c`, or `a.b[0].c`).
fn locate<'a>(root: &'a mut Value, path: &str) -> std::result::Result<&'a mut Value, String> {
    let normalized = path.replace('[', ".").replace(']', "");
    if normalized.split('.').any(str::is_empty) {
        return Err(format!(
            "the path has an empty part (a dot at an end, or two in a row); write the fields \
             with one dot between them, e.g. {}",
            normalized
                .split('.')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(".")
        ));
    }
    let mut here = root;
    let mut walked = String::new();
    for seg in normalized.split('.').filter(|s| !s.is_empty()) {
        let at = if walked.is_empty() {
            "the config".to_string()
        } else {
            format!("`{walked}`")
        };
        here = match here {
            Value::Object(map) => {
                if !map.contains_key(seg) {
                    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    keys.sort_unstable();
                    return Err(format!(
                        "{at} has no field `{seg}`; its fields are: {}",
                        keys.join(", ")
                    ));
                }
                map.get_mut(seg).expect("checked above")
            }
            Value::Array(items) => {
                let len = items.len();
                let idx: usize = seg.parse().map_err(|_| {
                    format!("{at} is a list; expected an index 0..{len}, got `{seg}`")
                })?;
                if idx >= len {
                    return Err(format!(
                        "{at} has {len} entries (indices 0..{}); there is no entry {idx}",
                        len.saturating_sub(1)
                    ));
                }
                &mut items[idx]
            }
            other => {
                return Err(format!(
                    "{at} is a single value ({other}), it has no field `{seg}`"
                ));
            }
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(seg);
    }
    if walked.is_empty() {
        return Err("empty path".into());
    }
    Ok(here)
}
