#!/usr/bin/env bash
# Rewrites the book's generated reference pages from the code:
#   docs/src/reference/cli.md     every command and flag (the clap definitions)
#   docs/src/reference/config.md  every layer kind and config field with its default
# A test (docs::the_books_reference_pages_are_what_the_code_generates) fails
# when they are out of date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --quiet
cnn=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}/debug/cnn
for page in cli config; do
    "$cnn" reference "$page" > "docs/src/reference/$page.md"
    echo "wrote docs/src/reference/$page.md"
done
