//! Flat glob matching for database names: `*` is any run of characters, `?` one character,
//! ASCII case-insensitive (Postgres folds unquoted names to lower case; rules are written by hand).

/// Whether `text` matches `pattern`. Iterative with one backtrack point: linear in practice and
/// never recursive, whatever the pattern.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("users", "USERS"));
        assert!(glob_match("public.*", "public.users"));
        assert!(glob_match("pg_?s", "pg_ls"));
        assert!(glob_match("*_log*", "app_log_2024"));
        assert!(!glob_match("users", "users2"));
        assert!(!glob_match("a*b", "acd"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }
}
