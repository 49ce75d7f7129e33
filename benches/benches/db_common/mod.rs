//! What the database benches share: a throwaway cluster (the dbproxy tests' harness) and
//! the DB proxy in front of it.

#[path = "../../../dbproxy/tests/common/pg.rs"]
#[allow(dead_code)]
pub mod pg;

use std::{path::PathBuf, sync::Arc};

use dbproxy::{
    DbProxy, ProxyOptions,
    proxy::{ClientCtx, SessionPool},
};
use policies::{Policy, engine::db::DbRules, load_policy};

/// The DB proxy for `cluster` on `<cluster>/<name>/.s.PGSQL.5432` (that dir returned), its
/// service's one statement rule allowing `operations` (e.g. `[READ]`, which makes sessions
/// read-only), accepting on `rt` until it is dropped; sessions run on `rt` too, or on `pool`'s
/// threads when given.
pub fn start_proxy(
    rt: &tokio::runtime::Runtime,
    cluster: &pg::PgCluster,
    name: &str,
    operations: &str,
    pool: Option<Arc<SessionPool>>,
) -> PathBuf {
    let pw = cluster.dir.join("app-password");
    std::fs::write(&pw, pg::APP_PASSWORD).unwrap();
    let yaml = format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n\
database_connection_rules:\n  - {{name: connect, db_service: appdb, decision: allow}}\n\
database_rules:\n  - {{name: statements, db_service: appdb, operations: {operations}, decision: allow}}\n",
        cluster.port,
        pw.display()
    );
    let policy: Policy = load_policy(&yaml, "bench.yaml").expect("bench policy loads");
    let opts = ProxyOptions {
        read_only: !dbproxy::proxy::grants_writes(&policy, "appdb"),
        ..ProxyOptions::default()
    };
    let service = policy.db_services["appdb"].clone();
    let proxy = Arc::new(DbProxy::new("appdb", service, Arc::new(DbRules::new(&policy)), opts));
    let dir = cluster.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = {
        let _in_rt = rt.enter();
        tokio::net::UnixListener::bind(dir.join(".s.PGSQL.5432")).expect("bind")
    };
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let p = proxy.clone();
            match &pool {
                Some(pool) => {
                    let Ok(s) = s.into_std() else { continue };
                    let open = move || tokio::net::UnixStream::from_std(s);
                    drop(pool.serve(p, open, ClientCtx::default()));
                }
                None => drop(tokio::spawn(async move { p.serve(s, ClientCtx::default()).await })),
            }
        }
    });
    dir
}
