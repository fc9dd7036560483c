//! One blocking HTTP GET to `mmash`, through `ureq`.
//!
//! `ureq` is built without TLS or compression (the daemon is on loopback or
//! the LAN), with proxies off (a `http_proxy` in a monitoring host's
//! environment must not send the check elsewhere), no redirects, one
//! deadline over the whole exchange (lookup, connect, send, headers and
//! body) and a bound on the body. Every failure is an error naming what
//! went wrong.

use std::time::{Duration, Instant};

/// Most bytes read from the daemon.
const MAX_RESPONSE: u64 = 1 << 20;

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Percent-encodes a label for a URL path: everything but unreserved
/// characters and `/`.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL authority for `host` and `port`: an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What went wrong, in words; a timeout says so plainly.
fn describe(e: ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!(
            "timed out after {} (-t)",
            check_mmash::check::say_duration(timeout)
        ),
        ureq::Error::Protocol(e) => format!("not an HTTP response: {e}"),
        ureq::Error::BodyExceedsLimit(n) => format!("response body over {n} bytes"),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        e => e.to_string(),
    }
}

/// `GET path` from `host:port`, with `Authorization: Bearer token`, all
/// of it before `deadline`.
pub fn get(
    host: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    deadline: Instant,
) -> Result<Response, String> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_owned())?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(left))
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .user_agent(concat!("check_mmash/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let url = format!("http://{}{path}", authority(host, port));
    let mut req = agent.get(&url).header("Accept", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().map_err(|e| describe(e, left))?;
    let status = resp.status().as_u16();
    if !(100..600).contains(&status) {
        return Err(format!("not an HTTP response: status {status}"));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .map_err(|e| format!("reading the response: {}", describe(e, left)))?;
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_for_the_path() {
        assert_eq!(encode_path("web.status.5xx"), "web.status.5xx");
        assert_eq!(encode_path("a b/c?d#é"), "a%20b/c%3Fd%23%C3%A9");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(authority("127.0.0.1", 8787), "127.0.0.1:8787");
        assert_eq!(authority("::1", 8787), "[::1]:8787");
        assert_eq!(authority("[::1]", 8787), "[::1]:8787");
        assert_eq!(authority("mon.example", 80), "mon.example:80");
    }
}
