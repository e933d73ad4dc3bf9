//! Host checking against DNS rebinding: a page on an attacker's domain whose name is
//! re-pointed at this server's address makes the victim's browser send requests with
//! `Host: <attacker's name>`. [`refuse_unknown_host`] answers those with 421 Misdirected
//! Request before any route runs, in every mode (demo included).
//!
//! Allowed `Host` values (ports are not compared; the name is what a rebinding changes):
//! the host of `PUBLIC_URL`, every name in `ALLOWED_HOSTS`, `localhost`, and any IP address
//! literal (`127.0.0.1`, `[::1]`, the listen address, a pod's own IP as kubelet probes send
//! it). An IP literal cannot be rebound: a browser's origin for it is the address itself.
//! A request without any `Host` (HTTP/1.0, in-process tests) is not a browser's and passes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

/// The host names this server answers to, besides `localhost` and IP literals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// The policy of a server reached at `public_url` (`PUBLIC_URL`) and the extra
    /// `allowed` names (`ALLOWED_HOSTS`, names with or without a port).
    pub fn new(public_url: Option<&str>, allowed: &[String]) -> Self {
        let mut names: Vec<String> = allowed
            .iter()
            .filter_map(|a| host_name(a))
            .map(normalise)
            .collect();
        if let Some(host) = public_url
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            names.push(normalise(&host));
        }
        names.sort();
        names.dedup();
        Self { names }
    }

    /// Whether `authority` (a `Host` header value, `name[:port]`) names this server.
    pub fn allows(&self, authority: &str) -> bool {
        let Some(name) = host_name(authority) else {
            return false;
        };
        if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return inner.parse::<Ipv6Addr>().is_ok();
        }
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        name == "localhost" || self.names.contains(&name)
    }
}

/// The name part of `name[:port]` or `[v6][:port]`; `None` when malformed.
fn host_name(authority: &str) -> Option<&str> {
    let authority = authority.trim();
    if authority.is_empty() {
        return None;
    }
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        return (rest.is_empty() || is_port(rest.strip_prefix(':')?)).then_some(name);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if is_port(port) && !name.is_empty() && !name.contains(':') => {
            Some(name)
        }
        Some(_) => None,
        None => Some(authority),
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses a request whose `Host` (or HTTP/2 authority) names none of this server's names
/// (see the module documentation) with 421 `host_not_allowed`.
pub async fn refuse_unknown_host(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let header_host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or(""));
    let authority = request.uri().authority().map(|a| a.as_str());
    if let Some(host) = header_host.or(authority)
        && !policy.allows(host)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::HostNotAllowed,
            "the Host header names none of this server's names; reach it through PUBLIC_URL, \
             a name in ALLOWED_HOSTS, localhost or an IP address",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_configured_names_loopback_and_ip_literals_only() {
        let policy = HostPolicy::new(
            Some("https://AetherV.corp.example"),
            &["ops.example:8443".to_owned(), "other.example".to_owned()],
        );
        for ok in [
            "aetherv.corp.example",
            "aetherv.corp.example:443",
            "AETHERV.corp.example.",
            "ops.example",
            "other.example:8000",
            "localhost:8000",
            "127.0.0.1:8000",
            "10.1.2.3:8000",
            "[::1]:8000",
            "[fd00::5]",
        ] {
            assert!(policy.allows(ok), "{ok} should be allowed");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "aetherv.corp.example.evil.example",
            "localhost.evil.example",
            "",
            "[not-an-ip]:80",
            "a:b:c",
            "host:99999999",
        ] {
            assert!(!policy.allows(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn without_configuration_only_loopback_and_addresses_pass() {
        let policy = HostPolicy::new(None, &[]);
        assert!(policy.allows("localhost:8000"));
        assert!(policy.allows("127.0.0.1:8000"));
        assert!(!policy.allows("rebind.attacker.example:8000"));
    }
}
