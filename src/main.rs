use cnn::error::{exit, exit_code};

fn main() {
    // Like other command-line tools, stop quietly when the reader of our
    // output goes away (`cnn summary ... | head`) instead of panicking.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal at start-up,
    // before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // candle's own CPU thread pool serves one caller at a time and spins
    // after each op waiting for the next. cnn's kernels and micro-batches
    // run on rayon, several at once, so that pool only makes them queue and
    // takes cores from them: on 2 cores LeNet trains 1.8× faster and OneConv
    // 2× faster without it. candle's ops then run on the calling thread
    // (networks with batch norm, whose candle ops lose ~7%). Setting
    // CANDLE_NUM_THREADS overrides this.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: at start-up, before any thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    keep_freed_memory();
    let cli = cnn::cli::parse();
    if let Err(err) = cnn::run(cli) {
        let code = exit_code(&err);
        if code == exit::INTERRUPTED {
            eprintln!("{err:#}");
        } else {
            eprintln!("error: {err:#}");
        }
        std::process::exit(code);
    }
    std::process::exit(exit::OK);
}

/// glibc gives every allocation over 32 MiB its own mapping and unmaps it
/// on free, so each training step's large activations and gradients came
/// back as fresh pages for the kernel to fault in and zero: a third of the
/// CPU time was system time on CIFAR-10 nets at batch 1024. Keeping freed
/// memory in the heap for reuse takes that away (step time -13% on the
/// airbench-shaped net, peak RSS +11%); the memory goes back at exit.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; it runs at
    // start-up, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
