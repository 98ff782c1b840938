use clap::Parser;
use cnn::error::{exit, exit_code};

fn main() {
    let cli = cnn::cli::Cli::parse();
    if let Err(err) = cnn::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
    std::process::exit(exit::OK);
}
