//! Configuration from the environment. Every problem is reported, each naming its variable.

use std::path::PathBuf;

use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_winrm::Secret;

/// How to authenticate to the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// NTLM (message encryption over HTTP).
    Ntlm,
    /// HTTP Basic (HTTPS only).
    Basic,
}

/// One host to manage.
#[derive(Debug, Clone)]
pub struct HostTarget {
    /// Host name as configured.
    pub name: String,
    /// WS-Man endpoint URL.
    pub endpoint: String,
    /// WinRM user.
    pub user: String,
    /// WinRM password.
    pub password: Secret,
    /// Authentication method.
    pub transport: Transport,
    /// Extra trusted CA file for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
}

/// The process configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Configured hosts; `None` means demo mode.
    pub hosts: Option<Vec<HostTarget>>,
    /// Where host scripts are deployed.
    pub install_directory: String,
}

fn flag(var: &dyn Fn(&str) -> Option<String>, name: &str, problems: &mut Vec<String>) -> bool {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            problems.push(format!("{name}: expected true or false, got {other:?}"));
            false
        }
    }
}

impl Config {
    /// Reads and checks the process environment.
    pub fn from_env() -> Result<Self, Vec<String>> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads and checks the variables `lookup` returns (empty values count as unset).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut problems = Vec::new();
        let install_directory =
            var("HOST_INSTALL_DIRECTORY").unwrap_or_else(|| DEFAULT_INSTALL_DIRECTORY.to_owned());
        let Some(list) = var("HYPERV_HOSTS") else {
            return Ok(Self {
                hosts: None,
                install_directory,
            });
        };
        let transport = match var("WINRM_TRANSPORT")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => Transport::Ntlm,
            Some(t) if t == "ntlm" => Transport::Ntlm,
            Some(t) if t == "basic" => Transport::Basic,
            Some(other) => {
                problems.push(format!(
                    "WINRM_TRANSPORT: expected ntlm or basic, got {other:?}"
                ));
                Transport::Ntlm
            }
        };
        let tls = flag(&var, "WINRM_USE_TLS", &mut problems);
        let insecure = flag(&var, "WINRM_INSECURE", &mut problems);
        let port = match var("WINRM_PORT") {
            None => {
                if tls {
                    5986
                } else {
                    5985
                }
            }
            Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
                problems.push(format!("WINRM_PORT: expected a port number, got {p:?}"));
                0
            }),
        };
        let user = var("WINRM_USERNAME").unwrap_or_else(|| {
            problems.push("WINRM_USERNAME: required when HYPERV_HOSTS is set".to_owned());
            String::new()
        });
        let password = match var("WINRM_PASSWORD") {
            Some(p) => Secret::new(p),
            None => {
                problems.push("WINRM_PASSWORD: required when HYPERV_HOSTS is set".to_owned());
                Secret::default()
            }
        };
        if transport == Transport::Basic && !tls {
            problems.push(
                "WINRM_TRANSPORT: basic sends the password in clear over HTTP; set WINRM_USE_TLS=true"
                    .to_owned(),
            );
        }
        let ca_file = var("WINRM_CA_FILE").map(PathBuf::from);
        if let Some(path) = &ca_file
            && !path.is_file()
        {
            problems.push(format!(
                "WINRM_CA_FILE: {} is not a readable file",
                path.display()
            ));
        }
        let scheme = if tls { "https" } else { "http" };
        let mut hosts = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.contains(['/', ' ', '@']) {
                problems.push(format!("HYPERV_HOSTS: {name:?} is not a host name"));
                continue;
            }
            hosts.push(HostTarget {
                name: name.to_owned(),
                endpoint: format!("{scheme}://{name}:{port}/wsman"),
                user: user.clone(),
                password: password.clone(),
                transport,
                ca_file: ca_file.clone(),
                insecure,
            });
        }
        if hosts.is_empty() && problems.is_empty() {
            problems.push("HYPERV_HOSTS: no host names in the list".to_owned());
        }
        if problems.is_empty() {
            Ok(Self {
                hosts: Some(hosts),
                install_directory,
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&|name| map.get(name).cloned())
    }

    #[test]
    fn no_hosts_means_demo_mode() {
        let c = config(&[]).unwrap();
        assert!(c.hosts.is_none());
        assert_eq!(c.install_directory, DEFAULT_INSTALL_DIRECTORY);
        assert!(config(&[("HYPERV_HOSTS", " ")]).unwrap().hosts.is_none());
    }

    #[test]
    fn hosts_with_credentials() {
        let c = config(&[
            ("HYPERV_HOSTS", "hv01.lab.example, hv02.lab.example"),
            ("WINRM_USERNAME", "LAB\\svc"),
            ("WINRM_PASSWORD", "pw"),
            ("WINRM_USE_TLS", "true"),
            ("WINRM_TRANSPORT", "basic"),
        ])
        .unwrap();
        let hosts = c.hosts.unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].endpoint, "https://hv02.lab.example:5986/wsman");
        assert_eq!(hosts[0].transport, Transport::Basic);
        assert!(!format!("{hosts:?}").contains("pw\""));
    }

    #[test]
    fn every_problem_names_its_variable() {
        let problems = config(&[
            ("HYPERV_HOSTS", "hv01"),
            ("WINRM_TRANSPORT", "kerberos"),
            ("WINRM_PORT", "99999"),
            ("WINRM_USE_TLS", "maybe"),
            ("WINRM_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        for name in [
            "WINRM_TRANSPORT",
            "WINRM_PORT",
            "WINRM_USE_TLS",
            "WINRM_USERNAME",
            "WINRM_PASSWORD",
            "WINRM_CA_FILE",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name} missing from {problems:?}"
            );
        }
        let basic_http = config(&[
            ("HYPERV_HOSTS", "hv01"),
            ("WINRM_USERNAME", "u"),
            ("WINRM_PASSWORD", "p"),
            ("WINRM_TRANSPORT", "basic"),
        ])
        .unwrap_err();
        assert!(basic_http[0].contains("WINRM_USE_TLS"));
    }
}
