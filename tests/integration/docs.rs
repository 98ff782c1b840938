//! The documentation and the shell: the book's generated reference pages
//! are what the code says, every internal link of the README and the book
//! leads somewhere, `cnn completions bash` completes in a real bash, the man
//! pages render, and `--version` and `--help` say what a user looks for.

use crate::common::{cnn, repo, run};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

/// Rewrite the generated pages with CNN_UPDATE_SNAPSHOTS=1 (or
/// scripts/dev/gen-docs.sh).
#[test]
fn the_books_reference_pages_are_what_the_code_generates() {
    let dir = tempfile::tempdir().unwrap();
    for page in ["cli", "config"] {
        let (code, generated, err) = run(cnn(dir.path()).args(["reference", page]));
        assert_eq!(code, 0, "{err}");
        let path = repo().join(format!("docs/src/reference/{page}.md"));
        if std::env::var_os("CNN_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date with the code: run scripts/dev/gen-docs.sh and commit it",
            path.display()
        );
    }
}

/// Every markdown file of the book and the README.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md"), repo().join("ARCHITECTURE.md")];
    walk(&repo().join("docs/src"), &mut out);
    out.sort();
    out
}

/// The anchors of a page's headings, as mdBook and GitHub make them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = std::collections::BTreeMap::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0usize);
        let slug = if *n == 0 { slug } else { format!("{slug}-{n}") };
        *n += 1;
        out.insert(slug);
    }
    out
}

/// The targets of a page's inline links `[text](target)`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Leave out inline code spans.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(j) = rest.find(')') {
                out.push(rest[..j].to_string());
                rest = &rest[j..];
            }
        }
    }
    out
}

#[test]
fn every_internal_link_of_the_readme_and_the_book_leads_somewhere() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let shown = page.strip_prefix(repo()).unwrap().display().to_string();
            if !target.exists() {
                broken.push(format!("{shown}: {link} (no such file)"));
                continue;
            }
            if let Some(a) = anchor
                && target.extension().is_some_and(|x| x == "md")
                && !anchors(&std::fs::read_to_string(&target).unwrap()).contains(a)
            {
                broken.push(format!("{shown}: {link} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_of_the_book_is_in_its_summary_and_the_readme_is_a_front_page() {
    let summary = std::fs::read_to_string(repo().join("docs/src/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in pages() {
        let Ok(rel) = page.strip_prefix(repo().join("docs/src")) else {
            continue;
        };
        let rel = rel.display().to_string();
        if rel != "SUMMARY.md" {
            assert!(
                listed.contains(&rel),
                "docs/src/SUMMARY.md does not list {rel}"
            );
        }
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines < 250,
        "README.md has {lines} lines; it is a front page, move detail to docs/"
    );
    // A newcomer finds how to train on their own images from the first screen.
    let first_screen: String = readme.lines().take(60).collect::<Vec<_>>().join(" ");
    let first_screen = first_screen
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        first_screen.contains("own images") || first_screen.contains("own photos"),
        "the README's first screen should say how to train on one's own images"
    );
}

fn bash(script: &str) -> (i32, String, String) {
    let out = StdCommand::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .output()
        .expect("bash runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bash_completion_completes_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (code, script, err) = run(cnn(dir.path()).args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("cnn.bash");
    std::fs::write(&file, script).unwrap();
    let f = file.display();
    // What bash does on `cnn tr<TAB>` and `cnn train --ep<TAB>`.
    let (code, out, err) = bash(&format!(
        "source {f}; complete -p cnn; \
         COMP_WORDS=(cnn tr); COMP_CWORD=1; COMP_LINE='cnn tr'; COMP_POINT=6; _cnn cnn tr cnn; \
         echo \"words: ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(cnn train --ep); COMP_CWORD=2; _cnn cnn --ep train; \
         echo \"flags: ${{COMPREPLY[*]}}\""
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-F _cnn cnn"), "complete -p cnn:\n{out}");
    assert!(out.contains("words: train"), "cnn tr<TAB>:\n{out}");
    assert!(
        out.contains("flags: --epochs"),
        "cnn train --ep<TAB>:\n{out}"
    );
    for (shell, needle) in [
        ("zsh", "#compdef cnn"),
        ("fish", "complete -c cnn"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, script, err) = run(cnn(dir.path()).args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(script.contains(needle), "{shell}'s script lacks {needle}");
        assert!(
            script.contains("lr-find"),
            "{shell}'s script lacks the commands"
        );
    }
    let (code, _, err) = run(cnn(dir.path()).args(["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
}

#[test]
fn man_pages_are_written_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let (code, _, err) = run(cnn(dir.path()).args(["man", "--out-dir"]).arg(&man));
    assert_eq!(code, 2, "no such folder yet: {err}");
    assert!(
        err.contains("--out-dir") && err.contains("create it"),
        "{err}"
    );
    std::fs::create_dir(&man).unwrap();
    let (code, _, err) = run(cnn(dir.path()).args(["man", "--out-dir"]).arg(&man));
    assert_eq!(code, 0, "{err}");
    for page in ["cnn.1", "cnn-train.1", "cnn-eval.1", "cnn-completions.1"] {
        assert!(man.join(page).is_file(), "{page} missing: {err}");
    }
    assert!(
        !man.join("cnn-reference.1").exists(),
        "hidden commands get no page"
    );
    // Written again only with --force.
    let (code, _, err) = run(cnn(dir.path()).args(["man", "--out-dir"]).arg(&man));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    let out = StdCommand::new("man")
        .arg("-l")
        .arg(man.join("cnn-train.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man is installed (scripts/test.sh installs man-db)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--epochs") && text.contains("--config"),
        "{text}"
    );
    // And the one page on stdout.
    let (code, page, _) = run(cnn(dir.path()).arg("man"));
    assert_eq!(code, 0);
    assert!(
        page.starts_with(".ie") || page.contains(".TH cnn 1"),
        "{page}"
    );
}

#[test]
fn version_says_commit_features_and_kernels_and_help_lists_commands_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (code, short, _) = run(cnn(dir.path()).arg("-V"));
    assert_eq!(code, 0);
    assert!(
        short.starts_with(&format!("cnn {}", env!("CARGO_PKG_VERSION"))),
        "{short}"
    );
    let (code, long, _) = run(cnn(dir.path()).arg("--version"));
    assert_eq!(code, 0);
    for needle in ["features:", "CPU:", "kernels:"] {
        assert!(long.contains(needle), "--version lacks {needle}:\n{long}");
    }
    if repo().join(".git").exists() {
        assert!(
            long.contains("(rev "),
            "--version lacks the commit:\n{long}"
        );
    }
    let (code, help, _) = run(cnn(dir.path()).arg("--help"));
    assert_eq!(code, 0);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("Options"))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        &commands[..4],
        ["train", "eval", "predict", "summary"],
        "{help}"
    );
    assert_eq!(
        commands[commands.len() - 2..],
        ["check-device", "help"],
        "{help}"
    );
    assert!(!commands.contains(&"reference"), "hidden: {help}");
}
