//! Cross-field checks of a policy, except the database sections (see `db_checks`).

use super::{
    path::YamlPath,
    validate::{Validate, Validator, is_env_name},
};
use crate::{
    Policy,
    matchers::domain::Hostname,
    model::{
        compat::CommandDecision,
        file::FileDecision,
        network::TlsRedirectMode,
        values::{DurationSpec, HostPort},
    },
};

impl Validate for Policy {
    fn validate(&self, v: &mut Validator) {
        let root = YamlPath::root();
        if let Some(version) = self.version
            && version != 1
        {
            v.error(root.key("version"), format!("unsupported version {version} (expected 1)"));
        }
        self.check_network(v);
        self.check_local(v);
        self.check_llm(v);
        self.check_db(v);
    }
}

impl Policy {
    fn check_network(&self, v: &mut Validator) {
        let list = YamlPath::root().key("network_rules");
        v.unique_names(&list, self.network_rules.iter().map(|r| r.name.as_str()));
        for (i, r) in self.network_rules.iter().enumerate() {
            if let Some(t) = &r.timeout
                && let Err(e) = t.parse::<DurationSpec>()
            {
                v.error(list.index(i).key("timeout"), e);
            }
        }
        let list = YamlPath::root().key("dns_redirects");
        v.unique_names(&list, self.dns_redirects.iter().map(|r| r.name.as_str()));

        let list = YamlPath::root().key("connect_redirects");
        v.unique_names(&list, self.connect_redirects.iter().map(|r| r.name.as_str()));
        for (i, r) in self.connect_redirects.iter().enumerate() {
            let item = list.index(i);
            match (&r.redirect_to, &r.redirect_to_unix) {
                (Some(_), Some(_)) => v.error(
                    item.key("redirect_to_unix"),
                    "redirect_to and redirect_to_unix are mutually exclusive (set exactly one)",
                ),
                (None, None) => v.error(item.clone(), "one of redirect_to or redirect_to_unix is required"),
                _ => {}
            }
            if let Some(to) = &r.redirect_to
                && let Err(e) = to.parse::<HostPort>()
            {
                v.error(item.key("redirect_to"), e);
            }
            if let Some(path) = &r.redirect_to_unix
                && !path.is_absolute()
            {
                v.error(item.key("redirect_to_unix"), "must be an absolute socket path");
            }
            if let Some(tls) = &r.tls {
                match (tls.mode, &tls.sni) {
                    (TlsRedirectMode::RewriteSni, None) => {
                        v.error(item.key("tls").key("mode"), "mode rewrite_sni requires tls.sni")
                    }
                    (TlsRedirectMode::Passthrough, Some(_)) => {
                        v.error(item.key("tls").key("sni"), "sni is only used with mode rewrite_sni")
                    }
                    (_, Some(sni)) => {
                        if let Err(e) = Hostname::parse(sni) {
                            v.error(item.key("tls").key("sni"), format!("invalid host name {sni:?}: {e}"));
                        }
                    }
                    _ => {}
                }
                if r.redirect_to_unix.is_some() && tls.mode == TlsRedirectMode::RewriteSni {
                    v.error(item.key("tls").key("mode"), "rewrite_sni needs a TCP target (redirect_to)");
                }
            }
        }
    }

    /// Unix sockets, files and commands.
    fn check_local(&self, v: &mut Validator) {
        let list = YamlPath::root().key("unix_socket_rules");
        v.unique_names(&list, self.unix_socket_rules.iter().map(|r| r.name.as_str()));

        let list = YamlPath::root().key("file_rules");
        v.unique_names(&list, self.file_rules.iter().map(|r| r.name.as_str()));
        for (i, r) in self.file_rules.iter().enumerate() {
            let item = list.index(i);
            for (j, p) in r.paths.iter().enumerate() {
                if p.is_abstract() {
                    v.error(
                        item.key("paths").index(j),
                        "@abstract names are only valid in unix_socket_rules",
                    );
                }
            }
            match (r.decision, &r.redirect_to) {
                (FileDecision::Redirect, None) => {
                    v.error(item.key("decision"), "redirect requires redirect_to")
                }
                (d, Some(_)) if d != FileDecision::Redirect => {
                    v.error(item.key("redirect_to"), "redirect_to is only used with decision redirect")
                }
                _ => {}
            }
        }

        let list = YamlPath::root().key("command_rules");
        v.unique_names(&list, self.command_rules.iter().map(|r| r.name.as_str()));
        for (i, r) in self.command_rules.iter().enumerate() {
            let item = list.index(i);
            match (r.decision, &r.redirect_to) {
                (CommandDecision::Redirect, None) => {
                    v.error(item.key("decision"), "redirect requires redirect_to")
                }
                (d, Some(_)) if d != CommandDecision::Redirect => {
                    v.error(item.key("redirect_to"), "redirect_to is only used with decision redirect")
                }
                _ => {}
            }
        }
    }

    fn check_llm(&self, v: &mut Validator) {
        let llm = YamlPath::root().key("llm");
        let list = llm.key("providers");
        v.unique_names(&list, self.llm.providers.iter().map(|p| p.name.as_str()));
        for (i, p) in self.llm.providers.iter().enumerate() {
            let item = list.index(i);
            if let Err(e) = check_base_url(&p.base_url) {
                v.error(item.key("base_url"), e);
            }
            if p.api_key_env.is_some() && p.api_key_file.is_some() {
                v.error(item.key("api_key_file"), "api_key_env and api_key_file are mutually exclusive");
            }
            if let Some(env) = &p.api_key_env
                && !is_env_name(env)
            {
                v.error(item.key("api_key_env"), format!("{env:?} is not an environment variable name"));
            }
        }
        let list = llm.key("dlp").key("custom_patterns");
        v.unique_names(&list, self.llm.dlp.custom_patterns.iter().map(|p| p.name.as_str()));
        for (i, p) in self.llm.dlp.custom_patterns.iter().enumerate() {
            if p.regex.regex.is_match("") {
                v.error(list.index(i).key("regex"), "pattern matches the empty string");
            }
        }
    }
}

/// `scheme://host[:port][/path]` with scheme http or https.
fn check_base_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid base_url {url:?}: {why}");
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("expected http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("credentials do not belong in the URL (use api_key_env)"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, tail.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if let Some(p) = port {
        p.parse::<u16>().map_err(|_| bad("bad port"))?;
    }
    if host.parse::<std::net::IpAddr>().is_err() {
        Hostname::parse(host).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(())
}
