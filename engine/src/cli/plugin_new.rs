//! `sluice plugin new`: scaffolds a consumer from a template (engine/templates/), one per
//! language, that builds with `sluice plugin build` and passes its own test as generated.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::plugin_build::{Language, WIT, write};

#[derive(Args)]
#[command(long_about = "\
Create the directory NAME with a consumer in the chosen language that counts records per key
(in the group's state), emits each key's new count, and rejects records without a key as
poison. It holds the source, wit/plugin.wit (the contract), a README, and a test: records in
test/input.jsonl and what the plugin must do with them in test/expected.jsonl.

Example:
  sluice plugin new --lang python visits
  cd visits
  sluice plugin build .
  sluice plugin test --wasm target/visits.wasm --input test/input.jsonl --expect test/expected.jsonl")]
pub struct NewArgs {
    /// The language: rust, python, js (javascript), c or go.
    #[arg(long)]
    lang: Language,
    /// The consumer's name: lowercase letters, digits and dashes, starting with a letter. Also
    /// the name of the directory it is created in.
    name: String,
    /// The directory to create it in.
    #[arg(long, default_value = ".")]
    parent: PathBuf,
}

/// Files of every template, whatever the language.
const COMMON: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../templates/common/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/common/gitignore"),
    ),
    (
        "test/input.jsonl",
        include_str!("../../templates/common/test/input.jsonl"),
    ),
    (
        "test/expected.jsonl",
        include_str!("../../templates/common/test/expected.jsonl"),
    ),
    ("wit/plugin.wit", WIT),
];

/// The language's own files; the first is the source a user edits.
fn files(language: Language) -> &'static [(&'static str, &'static str)] {
    match language {
        Language::Rust => &[
            (
                "src/lib.rs",
                include_str!("../../templates/rust/src/lib.rs"),
            ),
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
            ),
            // A copy of the SDK: its bindings come from ../wit, the project's contract.
            (
                "sluice-sdk/Cargo.toml",
                include_str!("../../../sdk/Cargo.toml"),
            ),
            (
                "sluice-sdk/src/lib.rs",
                include_str!("../../../sdk/src/lib.rs"),
            ),
            (
                "sluice-sdk/src/frame.rs",
                include_str!("../../../sdk/src/frame.rs"),
            ),
        ],
        Language::Python => &[("app.py", include_str!("../../templates/python/app.py"))],
        Language::JavaScript => &[
            ("app.js", include_str!("../../templates/js/app.js")),
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
            ),
        ],
        Language::C => &[("app.c", include_str!("../../templates/c/app.c"))],
        Language::Go => &[
            ("app.go", include_str!("../../templates/go/app.go")),
            ("go.mod", include_str!("../../templates/go/go.mod")),
        ],
    }
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args.parent.join(&args.name);
    if dir.exists() {
        bail!(
            "{} exists already: choose another name, or remove it first",
            dir.display()
        );
    }
    let language_files = files(args.lang);
    let source = language_files[0].0;
    for (path, text) in language_files.iter().chain(COMMON) {
        let text = text
            .replace("{{name}}", &args.name)
            .replace("{{language}}", args.lang.name())
            .replace("{{source}}", source);
        write(&dir.join(path), &text)?;
    }
    println!(
        "created {dir} ({language}: {source})\n\
         next:\n  \
         cd {dir}\n  \
         sluice plugin build .\n  \
         sluice plugin test --wasm target/{name}.wasm --input test/input.jsonl --expect test/expected.jsonl",
        dir = dir.display(),
        language = args.lang.name(),
        name = args.name,
    );
    Ok(())
}

/// A name that is a valid Rust package name, npm package name and file name alike.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` is not a usable name: use lowercase letters, digits and dashes, starting \
             with a letter (visit-counter, say)"
        );
    }
    Ok(())
}
