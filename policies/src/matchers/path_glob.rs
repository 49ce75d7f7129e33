//! Path globs for file and Unix-socket rules, compiled against a session's variables:
//! `*` and `?` stay inside one path segment, `**` spans any number of segments (none included),
//! `~` and `${VAR}` / `${VAR:-default}` expand first. `@name` globs match abstract socket names
//! as one flat string.

use std::path::Path;

/// One path segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: any number of segments.
    Deep,
    /// A segment with `*` and `?` wildcards (or none).
    Glob(Vec<u8>),
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledGlob {
    /// An absolute path pattern.
    Path(Vec<SegPattern>),
    /// An abstract socket name pattern (without the `@`).
    Abstract(Vec<u8>),
}

/// Opaque segment pattern of a [`CompiledGlob::Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegPattern(Seg);

/// Expand `~` and `${VAR}` / `${VAR:-default}` with `vars`; `None` when a variable is unset and
/// has no default (the rule then matches nothing rather than something unintended).
pub fn expand(glob: &str, vars: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    try_expand(glob, vars).ok()
}

/// [`expand`], telling why it failed: `Err(Some(name))` names the first variable that is unset
/// with no default (`HOME` for `~`), `Err(None)` an unclosed `${`.
pub fn try_expand(glob: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, Option<String>> {
    let value = |name: &str, default: Option<&str>| {
        vars(name).or_else(|| default.map(str::to_string)).ok_or_else(|| Some(name.to_string()))
    };
    let mut out = String::new();
    let mut rest = glob;
    if let Some(tail) = rest.strip_prefix('~')
        && (tail.is_empty() || tail.starts_with('/'))
    {
        out.push_str(&value("HOME", None)?);
        rest = tail;
    }
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('}').ok_or(None)?;
        let (name, default) = match tail[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&tail[..end], None),
        };
        out.push_str(&value(name, default)?);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether one path segment `seg` matches one segment `pat` of a glob (`*` any run within the
/// segment, `?` one byte, anything else literal; `**` is the caller's).
pub fn segment_matches(pat: &[u8], seg: &[u8]) -> bool {
    flat_match(pat, seg)
}

/// `*` any run, `?` one byte, anything else literal.
fn flat_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

fn segs_match(pat: &[SegPattern], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((SegPattern(Seg::Deep), rest)) => (0..=path.len()).any(|skip| segs_match(rest, &path[skip..])),
        Some((SegPattern(Seg::Glob(g)), rest)) => {
            path.first().is_some_and(|first| flat_match(g, first)) && segs_match(rest, &path[1..])
        }
    }
}

impl CompiledGlob {
    /// Compile `glob` after expanding it with `vars`; `None` when it cannot apply (an unset
    /// variable, or a path pattern that is not absolute after expansion).
    pub fn compile(glob: &str, vars: &dyn Fn(&str) -> Option<String>) -> Option<CompiledGlob> {
        if let Some(name) = glob.strip_prefix('@') {
            return Some(CompiledGlob::Abstract(name.as_bytes().to_vec()));
        }
        let text = expand(glob, vars)?;
        if !text.starts_with('/') && !text.starts_with('*') {
            return None;
        }
        let segs = text
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| SegPattern(if s == "**" { Seg::Deep } else { Seg::Glob(s.as_bytes().to_vec()) }))
            .collect();
        Some(CompiledGlob::Path(segs))
    }

    /// Whether the normalised absolute `path` matches.
    pub fn matches_path(&self, path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let CompiledGlob::Path(pat) = self else { return false };
        let segs: Vec<&[u8]> =
            path.as_os_str().as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
        segs_match(pat, &segs)
    }

    /// Whether the abstract socket `name` (without its leading NUL) matches.
    pub fn matches_abstract(&self, name: &[u8]) -> bool {
        matches!(self, CompiledGlob::Abstract(p) if flat_match(p, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/agent".into()),
            "PROJECT_ROOT" => Some("/work/ws".into()),
            _ => None,
        }
    }

    fn m(glob: &str, path: &str) -> bool {
        CompiledGlob::compile(glob, &vars).is_some_and(|g| g.matches_path(Path::new(path)))
    }

    #[test]
    fn segments_and_deep_wildcards() {
        assert!(m("/tmp/.s.PGSQL.*", "/tmp/.s.PGSQL.5432"));
        assert!(!m("/tmp/*", "/tmp/a/b"));
        assert!(m("/tmp/**", "/tmp/a/b"));
        assert!(m("/tmp/**", "/tmp"));
        assert!(m("/var/run/docker.sock", "/var/run/docker.sock"));
        assert!(!m("/var/run/docker.sock", "/var/run/docker.sock2"));
        assert!(m("/a/?/c", "/a/b/c"));
        assert!(m("/**/x.sock", "/deep/down/x.sock"));
    }

    #[test]
    fn variables_expand_and_unset_ones_match_nothing() {
        assert!(m("~/.ssh/agent.sock", "/home/agent/.ssh/agent.sock"));
        assert!(m("${PROJECT_ROOT}/**", "/work/ws/run/x.sock"));
        assert!(m("${UNSET:-/opt}/x", "/opt/x"));
        assert!(CompiledGlob::compile("${UNSET}/x", &vars).is_none());
        assert_eq!(try_expand("${UNSET:-/opt}/${ALSO}/x", &vars), Err(Some("ALSO".into())));
        assert_eq!(try_expand("${UNCLOSED/x", &vars), Err(None));
    }

    #[test]
    fn abstract_names_are_flat() {
        let g = CompiledGlob::compile("@dbus-*", &vars).unwrap();
        assert!(g.matches_abstract(b"dbus-session"));
        assert!(!g.matches_path(Path::new("/dbus-session")));
    }
}
