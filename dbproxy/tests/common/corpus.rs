//! The classification corpus (`testdata/classify_corpus.sql`): blocks separated by `====`
//! lines, each opening with `-- expect: <effects>`, then the SQL. Effects render as
//! `group[/subtype][(objects)][+where|-where]`, joined by ` ; `.

#![allow(dead_code)]

use dbproxy::Effect;

/// One corpus entry.
pub struct Case {
    /// The expected rendering.
    pub expect: String,
    /// The SQL text (everything after the expect line).
    pub sql: String,
}

/// Loads the corpus.
pub fn load() -> Vec<Case> {
    let text = include_str!("../../testdata/classify_corpus.sql");
    text.split("\n====\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let b = b.trim_start_matches('\n');
            let (first, sql) = b.split_once('\n').unwrap_or((b, ""));
            let expect =
                first.strip_prefix("-- expect: ").unwrap_or_else(|| panic!("block without expect: {b}"));
            Case { expect: expect.trim().to_string(), sql: sql.trim_end_matches('\n').to_string() }
        })
        .collect()
}

/// Renders effects compactly for comparison.
pub fn render(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|e| {
            let mut s = e.group.as_str().to_string();
            if let Some(sub) = &e.subtype {
                s.push('/');
                s.push_str(sub);
            }
            if !e.objects.is_empty() {
                let objs: Vec<String> = e.objects.iter().map(|o| o.to_string()).collect();
                s.push_str(&format!("({})", objs.join(",")));
            }
            match e.has_where {
                Some(true) => s.push_str("+where"),
                Some(false) => s.push_str("-where"),
                None => {}
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ; ")
}
