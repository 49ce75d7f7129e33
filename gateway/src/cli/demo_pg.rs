//! The demo's database: a throwaway Postgres cluster started from the installed server binaries
//! (`/usr/lib/postgresql/<version>/bin`), data dir and socket in a temp dir, TCP on 127.0.0.1,
//! an `app` role with a password the agent never sees, and a small table. Under root the server
//! runs as `postgres`. Stopped and removed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// The password of the `app` role (the gateway reads it from a file; the agent never has it).
pub const APP_PASSWORD: &str = "demo-app-password";

/// A running demo cluster.
pub struct DemoPg {
    dir: PathBuf,
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

/// The newest server bin dir, if Postgres is installed.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl DemoPg {
    /// Start a cluster under `parent`; `Ok(None)` when Postgres is not installed.
    pub fn start(parent: &Path) -> anyhow::Result<Option<DemoPg>> {
        let Some(bin) = server_bin() else { return Ok(None) };
        let dir = parent.join("pg");
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = DemoPg { dir, bin, port };
        if nix::unistd::geteuid().is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&pg.dir);
                    c
                },
                "chown",
            )?;
        }
        let data = pg.dir.join("data");
        pg.server(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
        )?;
        let opts = format!("-k {} -p {} -c listen_addresses=127.0.0.1", pg.dir.display(), pg.port);
        let log = pg.dir.join("server.log").display().to_string();
        pg.server("pg_ctl", &["-D", &data.display().to_string(), "-l", &log, "-o", &opts, "-w", "start"])?;
        pg.psql(&format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"), "postgres")?;
        pg.psql("CREATE DATABASE appdb OWNER app", "postgres")?;
        pg.psql(
            "CREATE TABLE customers (id int PRIMARY KEY, name text); \
             INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace'); ALTER TABLE customers OWNER TO app;",
            "appdb",
        )?;
        Ok(Some(pg))
    }

    fn server(&self, prog: &str, args: &[&str]) -> anyhow::Result<String> {
        let path = self.bin.join(prog);
        let cmd = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path).args(args);
            c
        } else {
            let mut c = Command::new(path);
            c.args(args);
            c
        };
        run(cmd, prog)
    }

    /// Run `sql` as the superuser in `db` over the cluster's socket.
    pub fn psql(&self, sql: &str, db: &str) -> anyhow::Result<String> {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&self.dir).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]);
        run(c, "psql")
    }
}

impl Drop for DemoPg {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = self.server("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
