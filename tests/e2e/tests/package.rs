//! The Debian package from `make package`, as a user gets it: its metadata and files, then
//! (installed with `dpkg -i`) `CREATE EXTENSION` and one sync against the stand-in on a fresh
//! cluster, running the package's files and nothing cargo built.
//!
//! Run through `make test-package`, which builds the .deb, installs it, runs these tests
//! with `PROCORE_DEB` set to its path, and removes it again. Ignored by the ordinary e2e run
//! (they need the package installed); without `PROCORE_DEB` they fail.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{ok_or_log, set_jobs, small_world};
use procore_sync_e2e::{stored_record_keys, Env, RecordKey};
use serde_json::json;
use uuid::Uuid;

const PACKAGE: &str = "postgresql-15-procore-sync";
const LIB_DIR: &str = "/usr/lib/postgresql/15/lib";
const EXT_DIR: &str = "/usr/share/postgresql/15/extension";
const LIBRARY: &str = "/usr/lib/postgresql/15/lib/procore_sync.so";

/// Libraries from glibc and GCC's runtime: what any C extension loads. Anything else (a
/// Rust std dylib, a library under ~/.rustup or target/) would not exist on a machine
/// without Rust.
const SYSTEM_LIBS: [&str; 7] = [
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];

/// The .deb under test; outside `make test-package` there is nothing to test, which is a
/// failure, not a pass.
fn deb_under_test() -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os("PROCORE_DEB")
            .expect("PROCORE_DEB is not set: run the package tests with `make test-package`"),
    );
    assert!(p.is_file(), "PROCORE_DEB={} is not a file", p.display());
    p
}

/// The extension's version: the [package] version of the workspace's Cargo.toml.
fn cargo_version() -> String {
    let manifest = include_str!("../../../Cargo.toml");
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim_start().trim_start_matches('=').trim();
                return v.trim_matches('"').to_string();
            }
        }
    }
    panic!("no [package] version in Cargo.toml");
}

/// Runs a command and returns its stdout, panicking with its output on failure.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `NEEDED` entries and any RPATH/RUNPATH of a shared object.
fn dynamic_section(so: &Path) -> (Vec<String>, Vec<String>) {
    let dump = run("objdump", &["-p", so.to_str().expect("UTF-8 path")]);
    let mut needed = Vec::new();
    let mut paths = Vec::new();
    for line in dump.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("NEEDED"), Some(lib)) => needed.push(lib.to_string()),
            (Some("RPATH" | "RUNPATH"), Some(p)) => paths.push(p.to_string()),
            _ => {}
        }
    }
    (needed, paths)
}

/// Upgrade scripts (`procore_sync--A--B.sql`) in the repository's sql/.
fn repo_upgrade_scripts() -> BTreeSet<String> {
    let sql_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql");
    std::fs::read_dir(&sql_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", sql_dir.display()))
        .map(|e| e.expect("sql dir entry").file_name().into_string().unwrap())
        .filter(|n| {
            n.starts_with("procore_sync--") && n.ends_with(".sql") && n.matches("--").count() == 2
        })
        .collect()
}

fn extract(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    run(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    dir
}

#[test]
#[ignore = "needs the .deb: make test-package"]
fn package_metadata_and_files() {
    let deb = deb_under_test();
    let deb_arg = deb.to_str().expect("UTF-8 path");
    let version = cargo_version();

    let field = |name: &str| run("dpkg-deb", &["-f", deb_arg, name]).trim().to_string();
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(
        field("Version"),
        version,
        "the package carries Cargo.toml's version"
    );
    assert_eq!(
        field("Architecture"),
        run("dpkg", &["--print-architecture"]).trim()
    );
    assert!(!field("Maintainer").is_empty(), "a Maintainer field");
    assert!(
        field("Description").contains("PostgreSQL 15"),
        "a Description: {}",
        field("Description")
    );
    let depends = field("Depends");
    let dep_names: Vec<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(
        dep_names.contains(&"postgresql-15"),
        "Depends names postgresql-15: {depends}"
    );
    for name in &dep_names {
        assert!(
            ["postgresql-15", "libc6", "libgcc-s1"].contains(name),
            "Depends only on PostgreSQL 15 and the C runtime, not {name:?}: {depends}"
        );
    }
    let info = run("dpkg-deb", &["-I", deb_arg]);
    assert!(
        info.contains(" md5sums"),
        "the package has md5sums, so `dpkg --verify` can check it:\n{info}"
    );

    // Exactly the extension's files, root-owned, in PostgreSQL 15's directories.
    let listing = run("dpkg-deb", &["-c", deb_arg]);
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "dpkg-deb -c line: {line}");
        assert_eq!(cols[1], "root/root", "root-owned: {line}");
        let path = cols[5].trim_start_matches('.');
        if !cols[0].starts_with('d') {
            files.insert(path.to_string());
        }
    }
    let mut expected: BTreeSet<String> = [
        LIBRARY.to_string(),
        format!("{EXT_DIR}/procore_sync.control"),
        format!("{EXT_DIR}/procore_sync--{version}.sql"),
    ]
    .into();
    let upgrades = repo_upgrade_scripts();
    assert!(
        !upgrades.is_empty(),
        "sql/ has upgrade scripts for the package to carry"
    );
    expected.extend(upgrades.iter().map(|n| format!("{EXT_DIR}/{n}")));
    assert_eq!(
        files, expected,
        "the package holds the library, the control file, this version's install script and \
         every upgrade script in sql/, and nothing else (no old install scripts, no build files)"
    );
    for f in &files {
        assert!(
            f.starts_with(&format!("{LIB_DIR}/")) || f.starts_with(&format!("{EXT_DIR}/")),
            "{f} is outside PostgreSQL 15's directories"
        );
    }

    // The files' contents: the upgrade scripts are sql/'s, the control file names this
    // version, and the library needs nothing beyond the C runtime.
    let root = extract(&deb);
    let repo_sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql");
    for name in &upgrades {
        let packaged = std::fs::read(root.path().join(&EXT_DIR[1..]).join(name)).unwrap();
        let source = std::fs::read(repo_sql.join(name)).unwrap();
        assert!(packaged == source, "{name} in the package is sql/{name}");
    }
    let control =
        std::fs::read_to_string(root.path().join(&EXT_DIR[1..]).join("procore_sync.control"))
            .unwrap();
    assert!(
        control.contains(&format!("default_version = '{version}'")),
        "the control file installs {version} by default:\n{control}"
    );
    let schema = std::fs::read_to_string(
        root.path()
            .join(&EXT_DIR[1..])
            .join(format!("procore_sync--{version}.sql")),
    )
    .unwrap();
    assert!(
        schema.contains("procore_sync_user"),
        "the install script defines the SQL functions"
    );
    let (needed, rpaths) = dynamic_section(&root.path().join(&LIBRARY[1..]));
    assert!(needed.contains(&"libc.so.6".to_string()), "{needed:?}");
    for lib in &needed {
        assert!(
            SYSTEM_LIBS.contains(&lib.as_str()),
            "procore_sync.so needs {lib}, which is not a system C runtime library ({needed:?})"
        );
    }
    assert!(
        rpaths.is_empty(),
        "no RPATH/RUNPATH into a build tree: {rpaths:?}"
    );
    println!(
        "{}: {} bytes, Depends: {depends}, NEEDED: {}",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len(),
        needed.join(" ")
    );
}

#[test]
#[ignore = "needs the .deb installed: make test-package"]
fn installed_package_creates_the_extension_and_syncs_a_user() {
    let deb = deb_under_test();
    let version = cargo_version();

    // The package is installed, owns the library PostgreSQL loads, and its files are
    // unmodified: the server below runs what the .deb holds.
    let status = run("dpkg-query", &["-W", "-f=${Status} ${Version}", PACKAGE]);
    assert_eq!(status, format!("install ok installed {version}"));
    let owner = run("dpkg", &["-S", LIBRARY]);
    assert_eq!(owner.trim(), format!("{PACKAGE}: {LIBRARY}"));
    let md5sums = run("dpkg-query", &["--control-show", PACKAGE, "md5sums"]);
    assert!(
        md5sums.contains(&LIBRARY[1..]),
        "dpkg has a checksum for the library:\n{md5sums}"
    );
    let verify = || run("dpkg", &["--verify", PACKAGE]);
    assert_eq!(
        verify(),
        "",
        "dpkg --verify: installed files match the package"
    );
    let packaged = extract(&deb);
    assert!(
        std::fs::read(LIBRARY).unwrap()
            == std::fs::read(packaged.path().join(&LIBRARY[1..])).unwrap(),
        "{LIBRARY} is byte for byte the .deb's"
    );

    // A fresh cluster with the library preloaded, the stand-in, CREATE EXTENSION (Env does
    // all three), one user connected through the OAuth code exchange.
    let started = Instant::now();
    let env = Env::new(
        small_world(1, json!({})),
        &[("procore_sync.max_workers", "1")],
    )
    .expect("a cluster with the packaged extension and the stand-in");
    let cluster = &env.cluster;
    let mut client = ok_or_log(cluster, env.client(), "connect");
    // Only the manual sync below: the default jobs must not sync the user first.
    set_jobs(&mut client, None, None);

    let extversion: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'procore_sync'",
            &[],
        )
        .expect("extversion")
        .get(0);
    assert_eq!(
        extversion, version,
        "CREATE EXTENSION installed the package's version"
    );

    let user = Uuid::new_v4();
    ok_or_log(
        cluster,
        env.connect_user(&mut client, user, "user-1"),
        "procore_connect",
    );
    let row = ok_or_log(
        cluster,
        client
            .query_one(
                "SELECT status, records_written, requests_made, \
                 extract(epoch FROM duration)::float8, error_message \
                 FROM procore_sync_user($1)",
                &[&user],
            )
            .map_err(Into::into),
        "procore_sync_user()",
    );
    let (sync_status, records, requests, secs, error): (String, i64, i64, f64, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        (sync_status.as_str(), error.as_deref()),
        ("completed", None),
        "the sync completed"
    );
    let expected: BTreeSet<RecordKey> = env
        .standin
        .records()
        .expect("stand-in records")
        .into_iter()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(records as usize, expected.len(), "records_written");
    assert_eq!(
        stored_record_keys(&mut client).expect("stored records"),
        expected,
        "procore_records holds every record the stand-in served for the user"
    );

    // The scheduler of the preloaded library runs, and this session maps the packaged
    // library and no other procore_sync.so.
    let scheduler: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'procore_sync scheduler'",
            &[],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(scheduler, 1, "the preloaded library started its scheduler");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("backend's maps");
    let mapped: BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with("procore_sync.so"))
        .collect();
    assert_eq!(
        mapped,
        BTreeSet::from([LIBRARY]),
        "the backend runs {LIBRARY}"
    );
    assert_eq!(verify(), "", "dpkg --verify after the run");

    println!(
        "installed {PACKAGE} {version}; CREATE EXTENSION -> extversion {extversion}; \
         procore_sync_user: {sync_status}, {records} records, {requests} requests in {secs:.2} s; \
         cluster start to end {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
