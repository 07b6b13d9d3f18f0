//! `procore-standin [--listen ADDR] [--world FILE.json] [--tls-dir DIR] [--exit-on-stdin-eof]`

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use procore_standin::{start, Options, World};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const USAGE: &str = "usage: procore-standin [--listen 127.0.0.1:0] [--world FILE.json] [--tls-dir DIR] [--exit-on-stdin-eof]";

struct Cli {
    options: Options,
    exit_on_stdin_eof: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut cli = Cli {
        options: Options::default(),
        exit_on_stdin_eof: false,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => cli.options.listen = value("--listen")?,
            "--world" => {
                let path = value("--world")?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read world file {path}: {e}"))?;
                let world: World =
                    serde_json::from_str(&text).map_err(|e| format!("world file {path}: {e}"))?;
                cli.options.world = world;
            }
            "--tls-dir" => cli.options.tls_dir = Some(PathBuf::from(value("--tls-dir")?)),
            "--exit-on-stdin-eof" => cli.exit_on_stdin_eof = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(cli))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("procore-standin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Handled explicitly: a shell's background job starts with SIGINT ignored, and the
    // contract promises that SIGINT stops the server.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("procore-standin: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match start(cli.options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("procore-standin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = io::stdout();
    let _ = writeln!(stdout, "LISTENING {}", running.url);
    let _ = stdout.flush();

    if cli.exit_on_stdin_eof {
        thread::spawn(|| {
            let mut sink = [0u8; 1024];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    // Blocks until SIGINT or SIGTERM.
    let _ = signals.forever().next();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Cli>, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags_in_both_spellings() {
        let cli = args(&[
            "--listen",
            "127.0.0.1:9",
            "--tls-dir=/tmp/x",
            "--exit-on-stdin-eof",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(cli.options.listen, "127.0.0.1:9");
        assert_eq!(cli.options.tls_dir, Some(PathBuf::from("/tmp/x")));
        assert!(cli.exit_on_stdin_eof);
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--world", "/nonexistent/world.json"]).is_err());
    }
}
