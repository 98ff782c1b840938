//! The train/validation/test split of a dataset. Every split is drawn from
//! the training seed, so a resumed run and `cnn eval` (which rebuild it from
//! the checkpoint's config) get exactly the same images.

use super::{Dataset, ImageSet};
use crate::config::{DataConfig, ValSize};
use crate::rng;
use anyhow::Result;
use rand::seq::SliceRandom;

/// A list of images of one [`ImageSet`].
#[derive(Debug, Clone)]
pub struct Subset<'a> {
    pub set: &'a ImageSet,
    pub indices: Vec<u32>,
}

impl Subset<'_> {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The three parts a run uses, after the held-out splits and the limits.
#[derive(Debug, Clone)]
pub struct Splits<'a> {
    pub train: Subset<'a>,
    pub val: Subset<'a>,
    pub test: Subset<'a>,
    /// The validation images held out (before any limit), for the run's
    /// config.json.
    pub val_count: usize,
    /// Test images carved from the training images (image folders without
    /// `data.test_dir`), before `limit_test`.
    pub carved_test_count: Option<usize>,
}

impl<'a> Splits<'a> {
    /// One seeded permutation of the training images: for an image folder
    /// without a test folder the first `test_size` become the test split;
    /// the next `val_size` the validation split; the rest train. Then
    /// `limit_train` / `limit_test` apply.
    pub fn new(data: &'a Dataset, cfg: &DataConfig, seed: u64) -> Result<Splits<'a>> {
        let n = data.train.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng::stream(seed, rng::Purpose::Split, 0));

        // Image folders without a test folder carve their test images first
        // (also when `cnn eval --test-dir` brings other test images, so that
        // the validation split stays the one trained with).
        let carved = if cfg.carves_test() || data.test.is_none() {
            let n_test = cfg.test_size().of(n);
            if n_test == 0 || n_test >= n {
                crate::bail_input!(
                    "data.test_size asks for {n_test} test images out of the {n} images of {}; give a count \
                     between 1 and {} or a fraction such as 0.1, or a separate folder in data.test_dir",
                    data.dir.display(),
                    n.saturating_sub(1)
                );
            }
            Some(n_test)
        } else {
            None
        };
        let pool = &order[carved.unwrap_or(0)..];
        let (test_set, mut test): (&ImageSet, Vec<u32>) = match (&data.test, carved) {
            (Some(set), _) => (set, (0..set.len() as u32).collect()),
            (None, n_test) => {
                let mut t = order[..n_test.unwrap_or(0)].to_vec();
                t.sort_unstable();
                (&data.train, t)
            }
        };
        let n_pool = pool.len();
        let n_val = cfg.val_size().of(n_pool);
        if n_val >= n_pool {
            let what = match carved {
                Some(t) => format!("the {n_pool} images left after the {t} test images"),
                None => format!("the {n_pool} training images"),
            };
            crate::bail_input!(
                "data.val_size asks for {n_val} validation images but {} has only {what}; lower it, \
                 e.g. --set data.val_size=0.1",
                data.name.name()
            );
        }
        let mut val = pool[..n_val].to_vec();
        let mut train = pool[n_val..].to_vec();
        val.sort_unstable();
        train.sort_unstable();
        if let Some(limit) = cfg.limit_train {
            if limit == 0 {
                crate::bail_input!(
                    "data.limit_train is 0; it must be at least 1 (or null for all images)"
                );
            }
            train.truncate(limit);
        }
        if let Some(limit) = cfg.limit_test {
            if limit == 0 {
                crate::bail_input!(
                    "data.limit_test is 0; it must be at least 1 (or null for all images)"
                );
            }
            test.truncate(limit);
        }
        Ok(Splits {
            train: Subset {
                set: &data.train,
                indices: train,
            },
            val: Subset {
                set: &data.train,
                indices: val,
            },
            test: Subset {
                set: test_set,
                indices: test,
            },
            val_count: n_val,
            carved_test_count: carved,
        })
    }

    /// The test split alone, as [`Splits::new`] gives it (a separate test
    /// set, `limit_test` applied), with empty training and validation
    /// splits: for a dataset loaded with `LoadOptions::test_only`.
    pub fn test_only(data: &'a Dataset, cfg: &DataConfig) -> Result<Splits<'a>> {
        let Some(set) = &data.test else {
            anyhow::bail!("the dataset has no separate test set");
        };
        let mut test: Vec<u32> = (0..set.len() as u32).collect();
        if let Some(limit) = cfg.limit_test {
            test.truncate(limit.max(1));
        }
        let none = |set| Subset {
            set,
            indices: Vec::new(),
        };
        Ok(Splits {
            train: none(&data.train),
            val: none(&data.train),
            test: Subset { set, indices: test },
            val_count: 0,
            carved_test_count: None,
        })
    }

    pub fn get(&self, split: super::Split) -> &Subset<'a> {
        match split {
            super::Split::Train => &self.train,
            super::Split::Val => &self.val,
            super::Split::Test => &self.test,
        }
    }

    /// Writes the sizes used into `cfg` as counts, so that the run's
    /// config.json states them and rebuilding the splits from it gives the
    /// same images.
    /// The training images and the largest evaluated split: how large the
    /// batches of training and evaluation can get.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.val.len().max(self.test.len()))
    }

    pub fn record_sizes(&self, cfg: &mut DataConfig) {
        cfg.val_size = Some(ValSize::Count(self.val_count));
        if let Some(t) = self.carved_test_count {
            cfg.test_size = Some(ValSize::Count(t));
        }
    }
}
