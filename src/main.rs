use clap::Parser;
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
    let cli = cnn::cli::Cli::parse();
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
