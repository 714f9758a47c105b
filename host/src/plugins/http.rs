//! Outbound HTTP for plugins, checked against the entry's grants.
//!
//! A request may go only to a host in `grants.http_hosts`. Unless
//! `grants.allow_private` is set, it may not reach a private, loopback,
//! link-local or otherwise non-public address: literal addresses are checked
//! in the URL, names after DNS resolution (by the client's resolver, so the
//! address checked is the address connected to), and both again on every
//! redirect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::bindings::http::{HttpError, Method, Request, Response};
use super::bindings::types::Header;
use super::host::HostState;
use crate::config::{Grants, HostPattern};

/// Largest response body handed to a plugin.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

/// Why the gate refused a destination; found again in reqwest's error chain.
#[derive(Debug)]
struct Denied(String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

/// One entry's HTTP client with its grants.
pub struct Gate {
    plugin: String,
    hosts: Arc<Vec<HostPattern>>,
    allow_private: bool,
    client: reqwest::Client,
}

impl Gate {
    pub fn new(plugin: &str, grants: &Grants) -> Result<Gate, String> {
        let hosts = Arc::new(grants.http_hosts.clone());
        let allow_private = grants.allow_private;
        let policy_hosts = hosts.clone();
        let policy_plugin = plugin.to_owned();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Denied(format!("more than {MAX_REDIRECTS} redirects")));
            }
            // Never from https down to http: the request's headers (an API
            // key) would travel in clear.
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                let host = attempt.url().host_str().unwrap_or_default().to_owned();
                return attempt.error(Denied(format!(
                    "a redirect from https to http://{host} was refused"
                )));
            }
            match check_url(attempt.url(), &policy_hosts, allow_private, &policy_plugin) {
                Ok(()) => attempt.follow(),
                Err(denied) => attempt.error(denied),
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .redirect(policy)
            .no_proxy()
            .user_agent(concat!("support-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Gate {
            plugin: plugin.to_owned(),
            hosts,
            allow_private,
            client,
        })
    }

    /// Sends `request`, giving up at `deadline` whatever its own timeout.
    pub async fn send(
        &self,
        request: Request,
        deadline: tokio::time::Instant,
    ) -> Result<Response, HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "only http and https URLs, got {:?}",
                url.scheme()
            )));
        }
        check_url(&url, &self.hosts, self.allow_private, &self.plugin)
            .map_err(|d| HttpError::Denied(d.0))?;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for Header { name, value } in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name {name:?}")))?;
            if name == reqwest::header::HOST {
                return Err(HttpError::InvalidRequest(
                    "the Host header follows from the URL".into(),
                ));
            }
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header {name}")))?;
            headers.append(name, value);
        }
        let now = tokio::time::Instant::now();
        let mut timeout = deadline.saturating_duration_since(now);
        if request.timeout_ms > 0 {
            timeout = timeout.min(Duration::from_millis(u64::from(request.timeout_ms)));
        }
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let exchange = async {
            let mut response = self
                .client
                .request(method, url)
                .headers(headers)
                .body(request.body)
                .send()
                .await
                .map_err(map_error)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| Header {
                    name: name.as_str().to_owned(),
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })
                .collect();
            if response
                .content_length()
                .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
            {
                return Err(HttpError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(map_error)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout),
        }
    }
}

impl super::bindings::http::Host for HostState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let result = self.entry.http.send(request, self.deadline).await;
        if let Err(HttpError::Denied(why)) = &result {
            tracing::warn!(plugin = %self.entry.id, reason = %why, "plugin HTTP request refused");
        }
        Ok(result)
    }
}

fn map_error(e: reqwest::Error) -> HttpError {
    // Without the URL: its query may hold a credential, and the message
    // may reach logs and API errors.
    let e = e.without_url();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = source {
        if let Some(denied) = err.downcast_ref::<Denied>() {
            return HttpError::Denied(denied.0.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        return HttpError::Timeout;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    HttpError::Transport(text)
}

/// Checks every URL in the entry's settings against its grants, so that a
/// `base_url` the grants do not allow fails at load (and in `plugins
/// check`) rather than at the first call.
pub fn check_settings(
    settings: &serde_json::Value,
    grants: &Grants,
    plugin: &str,
) -> Result<(), String> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::String(s)
                if s.starts_with("http://") || s.starts_with("https://") =>
            {
                out.push((path.to_owned(), s.clone()));
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(v, &format!("{path}.{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut urls = Vec::new();
    walk(settings, "settings", &mut urls);
    for (path, text) in urls {
        let url = reqwest::Url::parse(&text)
            .map_err(|e| format!("{path} = {text:?} is not a valid URL: {e}"))?;
        check_url(&url, &grants.http_hosts, grants.allow_private, plugin)
            .map_err(|d| format!("{path} = {text:?}, but {d}"))?;
    }
    Ok(())
}

/// The URL's host must be granted, and a literal address must be public.
fn check_url(
    url: &reqwest::Url,
    hosts: &[HostPattern],
    allow_private: bool,
    plugin: &str,
) -> Result<(), Denied> {
    let Some(host) = url.host() else {
        return Err(Denied("the URL has no host".into()));
    };
    let port = url.port_or_known_default().unwrap_or(0);
    let (name, literal) = match host {
        url::Host::Domain(d) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
        url::Host::Ipv4(ip) => (ip.to_string(), Some(IpAddr::V4(ip))),
        url::Host::Ipv6(ip) => (ip.to_string(), Some(IpAddr::V6(ip))),
    };
    if !hosts.iter().any(|p| p.matches(&name, port)) {
        return Err(Denied(format!(
            "host {name}:{port} is not in grants.http_hosts of plugin `{plugin}`"
        )));
    }
    if let Some(ip) = literal
        && !allow_private
        && !is_public(ip)
    {
        return Err(Denied(format!(
            "{ip} is a private, loopback or link-local address (grants.allow_private is off)"
        )));
    }
    Ok(())
}

/// Resolves names with the system resolver and refuses any answer that
/// contains a non-public address.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(Denied(format!(
                    "{host} resolves to {}, a private, loopback or link-local address (grants.allow_private is off)",
                    bad.ip()
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            // Other prefixes that carry an IPv4 address somewhere: local-use
            // NAT64 (64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32).
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
            {
                return false;
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::UNSPECIFIED
                || s[0..6] == [0; 6]) // IPv4-compatible and other ::/96
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().expect(public)), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(private.parse().expect(private)), "{private}");
        }
    }

    #[test]
    fn urls_need_a_grant_and_a_public_literal() {
        let hosts = vec![
            HostPattern::parse("api.example.com").expect("valid"),
            HostPattern::parse("127.0.0.1").expect("valid"),
        ];
        let url = |s: &str| reqwest::Url::parse(s).expect(s);
        assert!(check_url(&url("https://api.example.com/v1"), &hosts, false, "p").is_ok());
        let e =
            check_url(&url("https://evil.example.com/"), &hosts, false, "p").expect_err("refused");
        assert!(e.0.contains("not in grants.http_hosts"), "{e}");
        let e = check_url(&url("http://127.0.0.1:9/"), &hosts, false, "p").expect_err("refused");
        assert!(e.0.contains("private"), "{e}");
        assert!(check_url(&url("http://127.0.0.1:9/"), &hosts, true, "p").is_ok());
    }
}
