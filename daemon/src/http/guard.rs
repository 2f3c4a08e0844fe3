//! Who may send which HTTP request, checked on every request (WebSocket
//! handshakes included) before any route sees it:
//!
//! - the `Host` must be one this daemon answers to (no DNS rebinding);
//! - an `Origin`, if sent, must be the request's own host (no other page);
//! - a state-changing request (any method but GET and HEAD) must be
//!   `Content-Type: application/json` and not come from another site
//!   (`Sec-Fetch-Site`), so that no page can send it without a preflight;
//! - with an access token, every request but a GET of a page or a static
//!   file (the same for everyone, no data in them) must carry it:
//!   `Authorization: Bearer`, the WebSocket subprotocol `bearer.TOKEN` (what
//!   the pages send), or the query `token=` (for curl). No cookie ever
//!   carries it: browsers send cookies to every port of a host, so another
//!   local user's server on 127.0.0.1 would receive it.
//!
//! It decides and answers refusals; it routes nothing and changes no state.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Body, Method, Request, Response, StatusCode};

use super::token::Token;
use crate::http::throttle;
use system_runtime::burst::Burst;

/// Refusal warnings written per second at most (the rest are counted).
static REFUSALS: Burst = Burst::new("refusals", 10);

/// The rules, fixed at start.
pub struct Guard {
    /// The bound address.
    bound: SocketAddr,
    /// `--allow-host` names, lower case, each with or without a port.
    allowed: Vec<String>,
    token: Option<Token>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    UnknownHost,
    NoToken,
    ForeignOrigin,
    CrossSite,
    NotJson,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::NoToken => StatusCode::UNAUTHORIZED,
            Refusal::ForeignOrigin | Refusal::CrossSite => StatusCode::FORBIDDEN,
            Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Refusal::UnknownHost => {
                "this host name is not served here: use the address `system status` shows \
                 (or start with --allow-host NAME)"
            }
            Refusal::NoToken => {
                "this daemon requires its access token: open the URL `system status` shows"
            }
            Refusal::ForeignOrigin => "requests from pages of another origin are refused",
            Refusal::CrossSite => "state-changing requests from another site are refused",
            Refusal::NotJson => "state-changing requests must be Content-Type: application/json",
        }
    }
}

/// What the guard says about one request.
pub enum Verdict {
    /// Serve it.
    Pass,
    /// Answer this instead (a refusal, or the redirect that moves a
    /// `?token=` of a page into the URL's fragment).
    Answer(Response<Body>),
}

impl Guard {
    pub fn new(bound: SocketAddr, allow_hosts: &[String], token: Option<Token>) -> Guard {
        Guard {
            bound,
            allowed: allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            token,
        }
    }

    pub fn check(&self, request: &Request<Body>, peer: SocketAddr) -> Verdict {
        match self.verdict(request) {
            Ok(verdict) => verdict,
            Err(refusal) => {
                throttle::warn(&REFUSALS, || describe(request, peer, refusal));
                let body = format!("{}: {}\n", refusal.status(), refusal.explanation());
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = refusal.status();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Verdict::Answer(response)
            }
        }
    }

    fn verdict(&self, request: &Request<Body>) -> Result<Verdict, Refusal> {
        let headers = request.headers();
        let host = text(headers, header::HOST).ok_or(Refusal::UnknownHost)?;
        if !self.serves(host) {
            return Err(Refusal::UnknownHost);
        }
        if let Some(origin) = text(headers, header::ORIGIN)
            && !same_origin(origin, host)
        {
            return Err(Refusal::ForeignOrigin);
        }
        let safe = matches!(*request.method(), Method::GET | Method::HEAD);
        if !safe {
            let site = text(headers, "sec-fetch-site").unwrap_or("none");
            if !matches!(site, "same-origin" | "none") {
                return Err(Refusal::CrossSite);
            }
            if !is_json(text(headers, header::CONTENT_TYPE)) {
                return Err(Refusal::NotJson);
            }
        }
        let Some(token) = &self.token else {
            return Ok(Verdict::Pass);
        };
        let query = request.uri().query().unwrap_or("");
        let in_query = query_token(query).is_some_and(|t| token.matches(t));
        let bearer = text(headers, header::AUTHORIZATION).and_then(|a| a.strip_prefix("Bearer "));
        let carried = in_query
            || bearer.is_some_and(|t| token.matches(t))
            || subprotocol_token(headers).is_some_and(|t| token.matches(t));
        let path = same_site_path(request.uri().path());
        let page =
            web::asset(&path).is_some_and(|asset| asset.content_type.starts_with("text/html"));
        let upgrade = headers.contains_key(header::UPGRADE);
        if in_query && page && *request.method() == Method::GET && !upgrade {
            // An old `?token=` link to a page: the token moves into the
            // fragment, which the page keeps and no request carries.
            let rest: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.starts_with("token="))
                .collect();
            let mut location = path;
            if !rest.is_empty() {
                location = format!("{location}?{}", rest.join("&"));
            }
            let location = format!("{location}#token={}", token.as_str());
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return Ok(Verdict::Answer(response));
        }
        let public = matches!(*request.method(), Method::GET | Method::HEAD)
            && !upgrade
            && web::asset(request.uri().path()).is_some();
        if carried || public {
            Ok(Verdict::Pass)
        } else {
            Err(Refusal::NoToken)
        }
    }

    /// True if `host` (a `Host` header) names this daemon: a loopback name
    /// or the bound address with the bound port (any IP literal if bound to
    /// all addresses: an address cannot be rebound), or an `--allow-host`
    /// name (with its port, if it gave one).
    fn serves(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let literal = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let ours = name == "localhost"
            || literal.is_some_and(|ip| {
                ip.is_loopback() || ip == self.bound.ip() || self.bound.ip().is_unspecified()
            });
        if ours && port == self.bound.port() {
            return true;
        }
        self.allowed
            .iter()
            .any(|allowed| *allowed == host || *allowed == name)
    }
}

/// Splits `name[:port]` (`[v6]:port` too); the port is 80 if absent.
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => (&host[..colon], Some(&host[colon + 1..])),
        _ => (host, None),
    };
    if name.is_empty() {
        return None;
    }
    match port {
        None => Some((name, 80)),
        Some(port) => port.parse().ok().map(|port| (name, port)),
    }
}

/// True if `origin` (`scheme://authority`) has `host` as its authority.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    })
}

fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The token a WebSocket handshake offers as the subprotocol `bearer.TOKEN`
/// (a browser cannot set other headers on one).
fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix("bearer."))
}

/// `path` as a path of this site: backslashes as slashes and runs of
/// slashes as one, so that no `Location` made from it can name another
/// host (`//evil.com/` is a network-path reference).
fn same_site_path(path: &str) -> String {
    let mut normal = String::with_capacity(path.len() + 1);
    for c in path.chars().map(|c| if c == '\\' { '/' } else { c }) {
        if !(c == '/' && normal.ends_with('/')) {
            normal.push(c);
        }
    }
    if !normal.starts_with('/') {
        normal.insert(0, '/');
    }
    normal
}

fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// The log line of a refusal: what was refused, from whom, with the
/// client's text clipped.
fn describe(request: &Request<Body>, peer: SocketAddr, refusal: Refusal) -> String {
    let headers = request.headers();
    let field = |name: &str| text(headers, name).map_or_else(|| "none".to_owned(), throttle::clip);
    format!(
        "refused {} {} from {peer} ({:?}): Host {}, Origin {}, Sec-Fetch-Site {}, Content-Type {}",
        throttle::clip(request.method().as_str()).trim_matches('"'),
        throttle::clip(request.uri().path()),
        refusal,
        field("host"),
        field("origin"),
        field("sec-fetch-site"),
        field("content-type"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str, allow: &[&str]) -> Guard {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Guard::new(bound.parse().unwrap(), &allow, None)
    }

    #[test]
    fn loopback_names_and_the_bound_address_with_the_port_are_served() {
        let guard = guard("127.0.0.1:4000", &[]);
        for host in [
            "localhost:4000",
            "127.0.0.1:4000",
            "[::1]:4000",
            "LOCALHOST:4000",
        ] {
            assert!(guard.serves(host), "{host}");
        }
        for host in [
            "evil.example:4000",
            "localhost:4001",
            "localhost",
            "10.0.0.1:4000",
            ":4000",
            "localhost:x",
            "127.0.0.1.evil.example:4000",
        ] {
            assert!(!guard.serves(host), "{host}");
        }
    }

    #[test]
    fn allowed_names_match_with_their_port_or_any() {
        let guard = guard("0.0.0.0:4000", &["system.example", "Other.example:8080"]);
        assert!(guard.serves("system.example"));
        assert!(guard.serves("system.example:4000"));
        assert!(guard.serves("other.example:8080"));
        assert!(!guard.serves("other.example:4000"));
        assert!(guard.serves("192.168.1.5:4000"), "an address literal");
        assert!(!guard.serves("evil.example:4000"));
    }

    #[test]
    fn origins_content_types_and_subprotocols_are_read_strictly() {
        assert!(same_origin("http://127.0.0.1:4000", "127.0.0.1:4000"));
        assert!(!same_origin("http://127.0.0.1:4001", "127.0.0.1:4000"));
        assert!(!same_origin("null", "127.0.0.1:4000"));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("system, bearer.xyz"),
        );
        assert_eq!(subprotocol_token(&headers), Some("xyz"));
        assert_eq!(subprotocol_token(&HeaderMap::new()), None);
    }

    #[test]
    fn a_path_never_becomes_another_host() {
        for (path, normal) in [
            ("//evil.com/", "/evil.com/"),
            ("/\\evil.com/", "/evil.com/"),
            ("///load", "/load"),
            ("/load", "/load"),
            ("", "/"),
        ] {
            assert_eq!(same_site_path(path), normal, "{path}");
        }
    }
}
