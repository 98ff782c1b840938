use clap::Parser;
use cnn::error::{exit, exit_code};

fn main() {
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
