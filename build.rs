//! CUDA builds look for libcudart.so.12 (which candle's kernels link) next
//! to the binary first, then in the toolkit they were built with, so `cnn`
//! and that library can be copied together to a GPU machine. Nothing to do
//! for CPU builds.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let mut rpath = "$ORIGIN:$ORIGIN/../lib".to_string();
        if let Ok(home) = std::env::var("CUDA_HOME") {
            rpath.push_str(&format!(":{home}/lib64"));
        }
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{rpath}");
    }
}
