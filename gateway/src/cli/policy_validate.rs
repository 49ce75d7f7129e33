//! `agentsh policy validate FILE…`: strict loading with every error reported.

use std::process::ExitCode;

use super::policy_source;

/// Validate each file (as a policy, or as a server config with `config`); report all errors.
pub fn run(files: &[String], config: bool) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    for file in files {
        let src = policy_source::read(file)?;
        let result = if config {
            policies::config::load_server_config(&src.text, &src.display).map(drop)
        } else {
            policies::load_policy(&src.text, &src.display).map(drop)
        };
        match result {
            Ok(()) => println!("{}: ok", src.display),
            Err(errs) => {
                all_ok = false;
                let n = errs.0.len();
                println!("{errs}");
                println!("{}: {n} error{}", src.display, if n == 1 { "" } else { "s" });
            }
        }
    }
    Ok(ExitCode::from(if all_ok { 0 } else { 1 }))
}
