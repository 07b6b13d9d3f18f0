//! A stand-in plus a cluster whose worker talks to it, with the extension created: the
//! starting point of every end-to-end test and of the demo.

use anyhow::{Context, Result};
use serde_json::Value;
use uuid::Uuid;

use crate::cluster::{ensure_extension_installed, Cluster, ClusterOptions};
use crate::standin::Standin;

/// The redirect URI every connection in the tests is minted for and exchanged with.
pub const REDIRECT_URI: &str = "http://localhost/callback";

pub struct Env {
    // Declared first so it is dropped first: the worker should stop before "Procore" does.
    pub cluster: Cluster,
    pub standin: Standin,
    // Holds the stand-in's CA in TLS mode; removed after the stand-in is gone.
    _tls_dir: Option<tempfile::TempDir>,
}

impl Env {
    /// Starts a plain-HTTP stand-in serving `world` and a cluster with the worker preloaded
    /// and pointed at it, then `CREATE EXTENSION procore_sync`. `extra_settings` come last
    /// and so override the defaults (e.g. `("procore_sync.max_workers", "4")`).
    pub fn new(world: Value, extra_settings: &[(&str, &str)]) -> Result<Env> {
        ensure_extension_installed()?;
        let standin = Standin::start(world)?;
        Self::with_standin(standin, extra_settings)
    }

    /// Like `new`, but the stand-in serves HTTPS with its own CA, which the extension is
    /// told to trust through `procore_sync.ca_file`.
    pub fn new_tls(world: Value, extra_settings: &[(&str, &str)]) -> Result<Env> {
        ensure_extension_installed()?;
        let tls_dir = tempfile::Builder::new()
            .prefix("procore-e2e-tls-")
            .tempdir_in("/tmp")?;
        // The server reads the CA as the postgres OS user; tempfile makes the dir 0700.
        std::fs::set_permissions(
            tls_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("making the TLS dir readable for postgres")?;
        let standin = Standin::start_tls(world, tls_dir.path())?;
        let ca = standin
            .ca_file()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut settings: Vec<(&str, &str)> = vec![("procore_sync.ca_file", &ca)];
        settings.extend_from_slice(extra_settings);
        let mut env = Self::with_standin(standin, &settings)?;
        env._tls_dir = Some(tls_dir);
        Ok(env)
    }

    /// A cluster pointed at an already running stand-in.
    pub fn with_standin(standin: Standin, extra_settings: &[(&str, &str)]) -> Result<Env> {
        let env = Self::without_extension(standin, extra_settings)?;
        env.cluster
            .client()?
            .batch_execute("CREATE EXTENSION procore_sync")
            .context("CREATE EXTENSION procore_sync")?;
        Ok(env)
    }

    /// Like `with_standin`, but leaves `CREATE EXTENSION` (say, of an older version) to
    /// the caller.
    pub fn without_extension(standin: Standin, extra_settings: &[(&str, &str)]) -> Result<Env> {
        let mut options = ClusterOptions::default()
            .setting("procore_sync.database_name", "postgres")
            .setting("procore_sync.api_base_url", standin.base_url())
            .setting("procore_sync.login_base_url", standin.base_url())
            .setting("procore_sync.client_id", &standin.client_id())
            .setting("procore_sync.client_secret", &standin.client_secret());
        for (name, value) in extra_settings {
            options = options.setting(name, value);
        }
        let cluster = Cluster::start(options)?;
        Ok(Env {
            cluster,
            standin,
            _tls_dir: None,
        })
    }

    pub fn client(&self) -> Result<postgres::Client> {
        self.cluster.client()
    }

    /// Connects logins `user-1..=n` through `procore_connect`, each under a new user id.
    pub fn connect_users(&self, n: usize) -> Result<Vec<(Uuid, String)>> {
        let mut client = self.client()?;
        let mut users = Vec::with_capacity(n);
        for i in 1..=n {
            let login = format!("user-{i}");
            let user_id = Uuid::new_v4();
            self.connect_user(&mut client, user_id, &login)?;
            users.push((user_id, login));
        }
        Ok(users)
    }

    /// Mints a code for `login` and exchanges it through `procore_connect` for `user_id`.
    pub fn connect_user(
        &self,
        client: &mut postgres::Client,
        user_id: Uuid,
        login: &str,
    ) -> Result<()> {
        let code = self.standin.mint_code(login, REDIRECT_URI)?;
        client
            .execute(
                "SELECT procore_connect($1::uuid, $2, $3)",
                &[&user_id, &code, &REDIRECT_URI],
            )
            .with_context(|| format!("procore_connect for {login} ({user_id})"))?;
        Ok(())
    }
}
