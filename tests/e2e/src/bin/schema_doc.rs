//! Writes `docs/SCHEMA.md` from a fresh `CREATE EXTENSION procore_sync` in a throwaway
//! cluster (`make schema-doc`). `--check` writes nothing and fails when the file is stale.

use std::process::ExitCode;

use procore_sync_e2e::schema_doc::{
    first_differences, generate_from_fresh_cluster, schema_doc_path,
};

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("schema-doc: unknown argument {other:?} (usage: schema-doc [--check])");
            return ExitCode::from(2);
        }
    };
    let path = schema_doc_path();
    let generated = match generate_from_fresh_cluster() {
        Ok(text) => text,
        Err(e) => {
            eprintln!("schema-doc: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if check {
        if current == generated {
            println!("{} is up to date", path.display());
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{} is stale: run `make schema-doc`\n{}",
            path.display(),
            first_differences(&current, &generated, 20)
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .and_then(|()| std::fs::write(&path, &generated))
    {
        eprintln!("schema-doc: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
