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
