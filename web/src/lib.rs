//! The browser UI of the `system` daemon: the static pages `/` (sum), `/load`,
//! `/top` and `/processes`, with their stylesheet and scripts, embedded into the binary at
//! compile time.
//!
//! What it is for: the daemon's HTTP server calls [`asset`] with a request
//! path and serves the returned bytes with the returned content type. The
//! pages talk to the daemon only over the WebSocket at `/ws` (see
//! `docs/protocol.md`); this crate knows nothing about that protocol beyond
//! the scripts it ships.
//!
//! What it must not do: no I/O, no state, no dependencies, no build step.
//! Nothing is read from disk at run time and nothing is fetched from a CDN:
//! the pages must work offline, from a single binary. Keep the files under
//! `static/` small, hand-written, plain ES2020 scripts (no modules, no
//! bundler, no npm dependencies).

/// One embedded file: its `Content-Type` header value and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! file {
    ($ct:expr, $name:literal) => {
        Asset {
            content_type: $ct,
            body: include_bytes!(concat!("../static/", $name)),
        }
    };
}

/// Every served path with its file, pages first.
const ASSETS: &[(&str, Asset)] = &[
    ("/", file!(HTML, "index.html")),
    ("/load", file!(HTML, "load.html")),
    ("/top", file!(HTML, "top.html")),
    ("/processes", file!(HTML, "processes.html")),
    ("/static/app.css", file!(CSS, "app.css")),
    ("/static/app.js", file!(JS, "app.js")),
    ("/static/chart.js", file!(JS, "chart.js")),
    ("/static/sum.js", file!(JS, "sum.js")),
    ("/static/load.js", file!(JS, "load.js")),
    ("/static/top.js", file!(JS, "top.js")),
    ("/static/process.js", file!(JS, "process.js")),
    ("/static/processes.js", file!(JS, "processes.js")),
    ("/static/favicon.svg", file!(SVG, "favicon.svg")),
];

/// The file served at `path` (`/`, `/load`, `/top`, `/static/...`), if any.
/// A query string or fragment is ignored; `/index.html`, `/load/` and
/// `/top/` are accepted as aliases of the pages.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = match path {
        "/index.html" => "/",
        "/load/" => "/load",
        "/top/" => "/top",
        "/processes/" => "/processes",
        p => p,
    };
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// Every path [`asset`] serves (without aliases), e.g. for logging or tests.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(p, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGES: &[&str] = &["/", "/load", "/top", "/processes"];

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).expect(path).body).expect("utf-8")
    }

    /// Values of `attr="..."` in `html`, in order.
    fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len()..];
            let end = rest.find('"').expect("closing quote");
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
        out
    }

    fn ids(html: &str) -> Vec<&str> {
        attr_values(html, "id")
    }

    #[test]
    fn pages_are_html() {
        for p in PAGES {
            let a = asset(p).unwrap();
            assert_eq!(a.content_type, HTML, "{p}");
            assert!(text(p).starts_with("<!doctype html>"), "{p}");
        }
    }

    #[test]
    fn every_referenced_file_resolves_with_the_right_type() {
        for page in PAGES {
            let html = text(page);
            let scripts = attr_values(html, "src");
            assert!(scripts.contains(&"/static/app.js"), "{page} lacks app.js");
            for src in scripts {
                let a = asset(src).unwrap_or_else(|| panic!("{page}: {src} missing"));
                assert_eq!(a.content_type, JS, "{src}");
            }
            for href in attr_values(html, "href") {
                if matches!(href, "/" | "/load" | "/top" | "/processes") {
                    assert_eq!(asset(href).unwrap().content_type, HTML);
                    continue;
                }
                let a = asset(href).unwrap_or_else(|| panic!("{page}: {href} missing"));
                let want = match href.rsplit('.').next() {
                    Some("css") => CSS,
                    Some("svg") => SVG,
                    Some("js") => JS,
                    other => panic!("unexpected reference {href} ({other:?})"),
                };
                assert_eq!(a.content_type, want, "{href}");
            }
        }
    }

    #[test]
    fn every_page_has_nav_and_connection_state() {
        for page in PAGES {
            let html = text(page);
            assert!(ids(html).contains(&"ws-state"), "{page}");
            let hrefs = attr_values(html, "href");
            for target in PAGES {
                assert!(hrefs.contains(target), "{page} has no link to {target}");
            }
            assert!(html.contains("href=\"/static/app.css\""), "{page}");
        }
    }

    #[test]
    fn pages_have_the_elements_tests_rely_on() {
        let sum = ids(text("/"));
        for id in ["sum-form", "number", "results"] {
            assert!(sum.contains(&id), "/ lacks #{id}");
        }
        assert!(text("/").contains("inputmode=\"numeric\""));
        let load = ids(text("/load"));
        for id in [
            "jobs",
            "failure-rate",
            "apply",
            "reset",
            "schedulers",
            "memory",
            "workers",
            "jobs-chart",
            "usage-chart",
            "jobs-latest",
            "usage-latest",
        ] {
            assert!(load.contains(&id), "/load lacks #{id}");
        }
        for id in [
            "schedulers-online",
            "set-schedulers",
            "max-schedulers",
            "usage-each",
        ] {
            assert!(load.contains(&id), "/load lacks #{id}");
        }
        let top = ids(text("/top"));
        for id in ["top", "info-panel"] {
            assert!(top.contains(&id), "/top lacks #{id}");
        }
        let processes = ids(text("/processes"));
        for id in [
            "processes",
            "proc-search",
            "proc-prev",
            "proc-next",
            "proc-range",
            "proc-pause",
            "tree-panel",
            "tree",
            "info-panel",
        ] {
            assert!(processes.contains(&id), "/processes lacks #{id}");
        }
    }

    #[test]
    fn ids_are_unique_per_page() {
        for page in PAGES {
            let mut v = ids(text(page));
            let n = v.len();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), n, "{page} has duplicate ids");
        }
    }

    #[test]
    fn every_listed_asset_is_non_empty_and_typed() {
        for p in paths() {
            let a = asset(p).unwrap();
            assert!(!a.body.is_empty(), "{p}");
            assert!(std::str::from_utf8(a.body).is_ok(), "{p}");
            let want = match p {
                "/" | "/load" | "/top" | "/processes" => HTML,
                _ if p.ends_with(".js") => JS,
                _ if p.ends_with(".css") => CSS,
                _ if p.ends_with(".svg") => SVG,
                _ => panic!("unknown kind {p}"),
            };
            assert_eq!(a.content_type, want, "{p}");
        }
    }

    #[test]
    fn no_external_resources() {
        for p in paths() {
            let t = text(p);
            for bad in ["http://", "https://", "//cdn", "import "] {
                // the SVG namespace is the only URL allowed
                let t = t.replace("http://www.w3.org/2000/svg", "");
                assert!(!t.contains(bad), "{p} references {bad}");
            }
        }
    }

    #[test]
    fn aliases_and_queries() {
        assert_eq!(asset("/index.html"), asset("/"));
        assert_eq!(asset("/load/"), asset("/load"));
        assert_eq!(asset("/top?x=1"), asset("/top"));
        assert_eq!(asset("/static/app.js?v=2"), asset("/static/app.js"));
    }

    #[test]
    fn unknown_paths_are_none() {
        for p in [
            "",
            "/nope",
            "/static/",
            "/static/nope.js",
            "/static/../Cargo.toml",
            "/ws",
            "/LOAD",
            "/load.html",
            "/static/index.html",
            "static/app.js",
            "/favicon.ico",
        ] {
            assert!(asset(p).is_none(), "{p:?}");
        }
    }

    /// `node --check` on every script, when Node is installed (skipped otherwise).
    #[test]
    fn scripts_parse_with_node_if_available() {
        use std::process::Command;
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("node not found; skipping syntax check");
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        for p in paths().filter(|p| p.ends_with(".js")) {
            let file = dir.join(p.trim_start_matches("/static/"));
            let out = Command::new("node")
                .arg("--check")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{p}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
