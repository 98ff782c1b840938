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
    cnn::ops::cpu::keep_freed_memory();
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
