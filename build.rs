//! Every build: the git commit it was built from (`CNN_GIT_COMMIT`, for
//! `cnn --version`), when the source is a git checkout.
//!
//! CUDA builds only (nothing to do for CPU builds):
//! - `src/ops/cuda/*.cu` compiled to PTX with nvcc (`$NVCC`, else `nvcc` on
//!   the PATH) for `include_str!`; the driver turns it into machine code for
//!   whatever GPU runs it (compute capability 7.0 and newer);
//! - the binary looks for libcudart.so.12 (which candle's kernels link) next
//!   to itself first, then in the toolkit it was built with, so `cnn` and
//!   that library can be copied together to a GPU machine.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=NVCC");
    git_commit();
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let mut rpath = "$ORIGIN:$ORIGIN/../lib".to_string();
    if let Ok(home) = std::env::var("CUDA_HOME") {
        rpath.push_str(&format!(":{home}/lib64"));
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{rpath}");

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let src = "src/ops/cuda/update.cu";
    println!("cargo:rerun-if-changed={src}");
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3", "-arch=compute_70", "-o"])
        .arg(out.join("update.ptx"))
        .arg(src)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {nvcc} to compile {src}: {e} (set NVCC or put nvcc on the PATH)")
        });
    assert!(status.success(), "{nvcc} failed on {src}");
}

/// `CNN_GIT_COMMIT`: the short hash of HEAD, `+` when the work tree has
/// changes; empty outside a git checkout (a crates.io package, say).
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    let dirty = !commit.is_empty()
        && git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=CNN_GIT_COMMIT={commit}{}",
        if dirty { "+" } else { "" }
    );
    // Again after a commit or a checkout (HEAD, or the branch it names).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
}
