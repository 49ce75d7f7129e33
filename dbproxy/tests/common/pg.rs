//! A throwaway Postgres cluster for integration tests, started from the installed server
//! binaries (`/usr/lib/postgresql/<version>/bin`): `initdb` into a temp dir (local trust for
//! the superuser over the Unix socket, scram-sha-256 over TCP), `pg_ctl start` with the socket
//! in the temp dir and TCP on 127.0.0.1:<free port>, and a non-superuser `app` role with a
//! password. initdb refuses to run as root, so under root the server runs as `postgres` via
//! `runuser`. Stopped (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! [`PgCluster::start_or_skip`] returns `None` with the reason on stderr when the binaries or
//! a usable user are missing; under `AGENTSH_REQUIRE_PRIVILEGED=1` it panics instead.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// The password of the `app` role.
pub const APP_PASSWORD: &str = "app-secret-for-tests";

/// A running cluster.
pub struct PgCluster {
    /// Temp dir holding `data/`, the socket and the log.
    pub dir: PathBuf,
    /// The server's bin dir.
    pub bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    run_as: Option<String>,
}

/// Skips (prints why, returns `None`) or, under `AGENTSH_REQUIRE_PRIVILEGED=1`, fails.
pub fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("AGENTSH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("AGENTSH_REQUIRE_PRIVILEGED=1 but the Postgres test cannot run: {why}");
    }
    eprintln!("SKIP: {why}");
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The newest installed server bin dir with initdb, pg_ctl and postgres.
pub fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"].iter().all(|b| bin.join(b).exists()).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

const FINGERPRINT_SQL: &str = "
WITH user_ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%'
    AND nspname NOT LIKE 'pg_temp%'
)
SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
  SELECT format('rows %s.%s %s', n.nspname, c.relname,
    (xpath('/row/h/text()', query_to_xml(format(
      'SELECT count(*) || '':'' || md5(coalesce(string_agg(t::text, ''|'' ORDER BY t::text), '''')) AS h FROM %I.%I t',
      n.nspname, c.relname), false, true, '')))[1]::text) AS line
  FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm')
  UNION ALL SELECT format('sequence %s.%s %s', n.nspname, c.relname, pg_sequence_last_value(c.oid))
    FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace WHERE c.relkind = 'S'
  UNION ALL SELECT format('class %s.%s %s %s %s %s', n.nspname, c.relname, c.relkind, c.relowner::regrole,
    c.relacl, c.relrowsecurity) FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
  UNION ALL SELECT format('proc %s.%s(%s) %s %s', n.nspname, p.proname, oidvectortypes(p.proargtypes),
    md5(p.prosrc), p.proconfig) FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
  UNION ALL SELECT format('role %s %s %s %s', rolname, rolsuper, rolcanlogin, md5(coalesce(rolpassword, '')))
    FROM pg_authid
  UNION ALL SELECT format('db %s %s', datname, datacl) FROM pg_database
  UNION ALL SELECT format('setting %s %s %s', setdatabase, setrole, setconfig) FROM pg_db_role_setting
  UNION ALL SELECT format('large objects %s', count(*)) FROM pg_largeobject_metadata
  UNION ALL SELECT format('extension %s', extname) FROM pg_extension
  UNION ALL SELECT format('schema %s %s', nspname, nspacl) FROM pg_namespace
) lines
";

/// A server certificate and key (PEM) for a cluster started with `ssl=on`.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl PgCluster {
    /// Starts a cluster, or explains why it cannot.
    pub fn start_or_skip() -> Option<PgCluster> {
        Self::start(None)
    }

    /// Starts a cluster with `ssl=on` serving `tls` (plain connections are still accepted).
    pub fn start_tls_or_skip(tls: &ServerTls) -> Option<PgCluster> {
        Self::start(Some(tls))
    }

    fn start(tls: Option<&ServerTls>) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            return skip("no Postgres server binaries under /usr/lib/postgresql");
        };
        let run_as = if is_root() {
            let ok = Command::new("id").args(["-u", "postgres"]).output().is_ok_and(|o| o.status.success());
            if !ok || !Path::new("/usr/sbin/runuser").exists() && !Path::new("/sbin/runuser").exists() {
                return skip("running as root without a `postgres` user and runuser (initdb refuses root)");
            }
            Some("postgres".to_string())
        } else {
            None
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agentsh-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let c = PgCluster { dir, bin, port: free_port(), run_as };
        if let Some(u) = &c.run_as {
            c.must(Command::new("chown").arg(format!("{u}:")).arg(&c.dir), "chown");
        }
        let pwfile = c.dir.join("pw");
        std::fs::write(&pwfile, "postgres-test\n").expect("pwfile");
        if let Some(u) = &c.run_as {
            c.must(Command::new("chown").arg(format!("{u}:")).arg(&pwfile), "chown");
        }
        let initdb = c.server_cmd(
            "initdb",
            &[
                "-D",
                &c.data(),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
            ],
        );
        c.must_run(initdb, "initdb");
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off -c full_page_writes=off -c password_encryption=scram-sha-256",
            c.port,
            c.dir.display()
        );
        if let Some(tls) = tls {
            // The server refuses a key others can read; relative paths are in the data dir.
            for (name, pem, mode) in
                [("server.crt", &tls.cert_pem, 0o644), ("server.key", &tls.key_pem, 0o600)]
            {
                use std::os::unix::fs::PermissionsExt;
                let path = c.dir.join("data").join(name);
                std::fs::write(&path, pem).expect("write TLS file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                if let Some(u) = &c.run_as {
                    c.must(Command::new("chown").arg(format!("{u}:")).arg(&path), "chown");
                }
            }
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = c.dir.join("server.log").display().to_string();
        let start =
            c.server_cmd("pg_ctl", &["-D", &c.data(), "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        c.must_run(start, "pg_ctl start");
        c.psql_ok("postgres", &format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"));
        c.psql_ok("postgres", "CREATE DATABASE appdb OWNER app");
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// The Unix socket directory (for `psql -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    fn server_cmd(&self, prog: &str, args: &[&str]) -> Command {
        let path = self.bin.join(prog);
        match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path).args(args);
                c
            }
            None => {
                let mut c = Command::new(path);
                c.args(args);
                c
            }
        }
    }

    fn must(&self, cmd: &mut Command, what: &str) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn must_run(&self, mut cmd: Command, what: &str) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// psql as the superuser over the Unix socket: `-X -A -t -v ON_ERROR_STOP=1`, one `-c` per
    /// element of `commands` (each one simple Query, in one session).
    pub fn psql(&self, db: &str, commands: &[&str]) -> Output {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&self.dir).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ]);
        for cmd in commands {
            c.arg("-c").arg(cmd);
        }
        c.env_remove("PGPASSWORD").output().expect("psql runs")
    }

    /// psql that must succeed.
    pub fn psql_ok(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, &[sql]);
        assert!(out.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The state of database `db`, read as the superuser: for every table and materialised
    /// view its row count and a hash of its rows, every sequence's position, the catalog objects that a
    /// statement could create, change or drop (relations with owners and grants, functions
    /// with their bodies, roles with their passwords, databases, per-role settings, large
    /// objects, extensions, schemas). Equal fingerprints: nothing changed.
    pub fn fingerprint(&self, db: &str) -> String {
        self.psql_ok(db, FINGERPRINT_SQL)
    }

    /// libpq-style connection string for `app` over TCP (password needed).
    pub fn app_tcp_conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=app dbname=appdb password={APP_PASSWORD}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stop = self.server_cmd("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        let _ = { stop }.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
