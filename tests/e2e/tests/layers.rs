//! The extension's layers, read from its source: `api` (SQL functions) and `worker`
//! (background entry points) on top, `sync` below them, `data` below that, and the leaf
//! modules (`settings`, `errors`, `log_redaction`) under everything. A module may use its
//! own layer or one below, never one above, and the two entry-point layers never use each
//! other. No cluster needed.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    Leaf,
    Data,
    Sync,
    Api,
    Worker,
}

impl Layer {
    fn rank(self) -> u8 {
        match self {
            Layer::Leaf => 0,
            Layer::Data => 1,
            Layer::Sync => 2,
            Layer::Api | Layer::Worker => 3,
        }
    }

    fn of_module(name: &str) -> Option<Layer> {
        match name {
            "api" => Some(Layer::Api),
            "worker" => Some(Layer::Worker),
            "sync" => Some(Layer::Sync),
            "data" => Some(Layer::Data),
            "settings" | "errors" | "log_redaction" => Some(Layer::Leaf),
            // Re-exports of procore_sync_core at the crate root.
            _ => None,
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file belongs to: its top directory, or its own name at the top level.
/// `lib.rs` wires everything and the in-database tests reach everywhere: neither is a layer.
fn layer_of_file(relative: &Path) -> Option<Layer> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    Layer::of_module(name)
}

/// Every `crate::<module>` a file names, outside comments, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let module: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, module));
            rest = after;
        }
    }
    found
}

fn violations() -> Vec<String> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 10,
        "found only {} source files under {src:?}",
        files.len()
    );
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
        let Some(own) = layer_of_file(&relative) else {
            continue;
        };
        let text = fs::read_to_string(&file).expect("read source");
        for (line, module) in crate_paths(&text) {
            let Some(used) = Layer::of_module(&module) else {
                continue;
            };
            let upward = used.rank() > own.rank();
            let sideways = used.rank() == own.rank() && used != own && used.rank() == 3;
            if upward || sideways {
                found.push(format!(
                    "{}:{line}: a {own:?} module uses crate::{module} ({used:?})",
                    relative.display()
                ));
            }
        }
    }
    found
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let found = violations();
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn every_sql_function_and_trigger_lives_in_the_api_layer() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let outside: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("api")) && !f.ends_with("pg_tests.rs"))
        .filter(|f| {
            fs::read_to_string(f)
                .expect("read source")
                .lines()
                .any(|l| {
                    let l = l.trim_start();
                    l.starts_with("#[pg_extern") || l.starts_with("#[pg_trigger")
                })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "#[pg_extern] outside src/api: {outside:?}"
    );
}

#[test]
fn the_check_sees_an_upward_use() {
    // The scanner itself: a data module naming the sync layer is caught, a comment is not.
    let uses = crate_paths("use crate::sync::launch; // crate::api in a comment");
    assert_eq!(uses, vec![(1, "sync".to_string())]);
    let own = layer_of_file(Path::new("data/queue.rs")).expect("data is a layer");
    let used = Layer::of_module("sync").expect("sync is a layer");
    assert!(used.rank() > own.rank());
}
