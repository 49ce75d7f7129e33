//! Statement classification and the statement decision, per statement: the cost the DB proxy
//! adds to every Query and Parse. Target (issue 6): classification under 10 µs for a typical
//! statement. `db_analyze` is what the proxy runs on a text it has not seen recently
//! (classification plus the audit log's digest and redacted text, from one tokenization);
//! `db_analyze_cached` is a text seen recently (the proxy's [`classify::AnalysisCache`]);
//! `db_analyze_same_shape` a text never seen before whose shape was (values inlined by the
//! client, as pgbench's simple protocol sends them), against `db_analyze_inline` for the same
//! texts analysed afresh.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dbproxy::classify;
use policies::{Policy, engine::db::DbRules, load_policy};

const STATEMENTS: &[(&str, &str)] = &[
    ("point_select", "SELECT id, name, email FROM users WHERE id = $1"),
    (
        "join_order_limit",
        "SELECT u.name, sum(o.total) FROM users u JOIN orders o ON o.user_id = u.id WHERE o.created_at > now() - interval '7 days' GROUP BY u.name ORDER BY 2 DESC LIMIT 20",
    ),
    ("insert_values", "INSERT INTO orders (user_id, total, note) VALUES ($1, $2, $3) RETURNING id"),
    ("update_where", "UPDATE users SET name = $1, email = $2 WHERE id = $3"),
    (
        "cte_delete",
        "WITH d AS (DELETE FROM sessions WHERE expires_at < now() RETURNING user_id) SELECT count(*) FROM d",
    ),
    ("set_role", "SET ROLE admin"),
    ("multi_3", "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; COMMIT"),
    ("invalid", "SELEC * FROM users"),
];

/// Statements with values inlined: `{}` is replaced by a different number each time.
const INLINE: &[(&str, &str)] = &[
    ("pgbench_select", "SELECT abalance FROM pgbench_accounts WHERE aid = {};"),
    (
        "join_order_limit",
        "SELECT u.name, sum(o.total) FROM users u JOIN orders o ON o.user_id = u.id WHERE o.created_at > now() - interval '7 days' AND u.id > {} GROUP BY u.name ORDER BY 2 DESC LIMIT 20",
    ),
    ("update_where", "UPDATE users SET name = 'n{}', email = 'e' WHERE id = {}"),
];

/// 4,096 texts of `template`, each with other values.
fn inlined(template: &str) -> Vec<String> {
    (0..4096u32).map(|i| template.replace("{}", &(i * 7919 % 1_000_003).to_string())).collect()
}

const POLICY: &str = "db_services:\n  \
  appdb: {family: postgres, upstream: '127.0.0.1:5432', tls_mode: terminate_plaintext_upstream}\n\
database_rules:\n  \
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}\n  \
  - {name: tx, db_service: appdb, operations: [transaction], decision: allow}\n  \
  - {name: writes, db_service: appdb, operations: [INSERT, UPDATE], objects: [users, orders, accounts], require_where: true, decision: allow}\n  \
  - {name: no-secrets, operations: [READ], objects: ['vault.*', secrets], decision: deny}\n  \
  - {name: no-danger, operations: [DANGEROUS], decision: deny}\n  \
  - {name: safe-set, db_service: appdb, operations: [session], subtypes: [set, reset], objects: [application_name, statement_timeout], decision: allow}\n";

fn bench(c: &mut Criterion) {
    let policy: Policy = load_policy(POLICY, "bench.yaml").expect("bench policy loads");
    let rules = DbRules::new(&policy);
    let mut g = c.benchmark_group("db_classify");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| b.iter(|| classify(black_box(sql))));
    }
    g.finish();
    let mut g = c.benchmark_group("db_analyze");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| b.iter(|| classify::analyze(black_box(sql))));
    }
    g.finish();
    let cache = classify::AnalysisCache::default();
    let mut g = c.benchmark_group("db_analyze_cached");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| b.iter(|| cache.analyze(black_box(sql))));
    }
    g.finish();
    for (group, warm) in [("db_analyze_inline", false), ("db_analyze_same_shape", true)] {
        let mut g = c.benchmark_group(group);
        for (name, template) in INLINE {
            let texts = inlined(template);
            let cache = classify::AnalysisCache::default();
            if warm {
                cache.analyze(&texts[0]);
                cache.analyze(&texts[0]);
            }
            let mut i = 0;
            g.bench_function(*name, |b| {
                b.iter(|| {
                    i = (i + 1) % texts.len();
                    if warm {
                        cache.analyze(black_box(&texts[i]))
                    } else {
                        std::sync::Arc::new(classify::analyze(black_box(&texts[i])))
                    }
                })
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("db_decide");
    for (name, sql) in STATEMENTS {
        let effects = classify(sql);
        let views: Vec<_> = effects.iter().map(|e| e.view()).collect();
        g.bench_function(*name, |b| b.iter(|| rules.decide_statement(black_box("appdb"), black_box(&views))));
    }
    g.finish();
    let mut g = c.benchmark_group("db_classify_and_decide");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let effects = classify(black_box(sql));
                let views: Vec<_> = effects.iter().map(|e| e.view()).collect();
                rules.decide_statement("appdb", &views).permits()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
