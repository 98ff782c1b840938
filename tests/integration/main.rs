//! The integration tests, one binary with a module per concern (one link
//! instead of one per file). They drive the real `cnn` binary on real data:
//! the committed MNIST subset in `tests/fixtures/mnist-small`, full MNIST in
//! `../shared/data/mnist` and Debian's Fashion-MNIST package.

mod architecture;
mod augment;
mod bf16;
mod blocks;
mod cifar;
mod common;
mod config_errors;
mod controls;
mod distributed;
mod docs;
mod download;
mod export;
mod fashion_mnist;
mod hardening;
mod image_folder;
mod layers;
mod ops;
mod outputs;
mod photos;
mod predict;
mod probe_findings;
mod recipe_features;
mod recipes;
mod report;
mod resume;
mod settings;
mod summary;
mod sweep;
mod train_eval;
mod visual;
mod zoo;
