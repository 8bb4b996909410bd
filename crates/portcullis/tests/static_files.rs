//! The built-in static file upstream, end to end: the real binary serving
//! a folder, read over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/gateway.rs"]
mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use support::{Gateway, get, quickstart_copy, request};

/// The quickstart policy in front of a folder; `/public/**` is open to all.
fn site(listing: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, config) = quickstart_copy(&format!(
        "[upstream]\nstatic_dir = \"site\"\ndirectory_listing = {listing}\n\n[log]\ndecisions = \"off\"\n"
    ));
    let root = dir.path().join("site/public");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("withindex")).unwrap();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(root.join("docs/<b>&.txt"), "x").unwrap();
    std::fs::write(root.join("withindex/index.html"), "<p>index</p>").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();
    std::fs::write(root.join("secret.txt"), "no").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "outside the root").unwrap();
    symlink(dir.path().join("outside.txt"), root.join("escape")).unwrap();
    symlink(root.join("hello.txt"), root.join("inside")).unwrap();
    symlink(root.join(".env"), root.join("env-link")).unwrap();
    // Everything readable by an unprivileged user but the one secret file.
    open_up(dir.path());
    std::fs::set_permissions(
        root.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    (dir, config)
}

fn open_up(p: &Path) {
    let meta = std::fs::symlink_metadata(p).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = if meta.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path());
        }
    }
}

/// Root reads any file, so the gateway runs as `nobody` when the tests do
/// not: a file mode then means what it says.
fn start(config: &Path) -> Gateway {
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.unwrap_or(false) {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_portcullis"));
        Gateway::start_with(cmd, config)
    } else {
        Gateway::start(config)
    }
}

#[test]
fn nothing_outside_the_root_or_hidden_is_served() {
    let (_d, config) = site(false);
    let gw = start(&config);
    for path in ["/public/escape", "/public/.env", "/public/env-link"] {
        let r = get(gw.addr, path, &[]);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "NotFound");
        assert!(!r.text().contains("outside") && !r.text().contains("SECRET"));
    }
    let r = get(gw.addr, "/public/inside", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "hello, world\n"));
}

#[test]
fn folders_and_unreadable_files_are_403_with_their_codes() {
    let (_d, config) = site(false);
    let gw = start(&config);
    let r = get(gw.addr, "/public/docs/", &[]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("DirectoryListingDisabled"))
    );
    let r = get(gw.addr, "/public/secret.txt", &[]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("FileNotReadable"))
    );
    assert!(
        !r.text().contains("secret.txt"),
        "the refusal names the file: {}",
        r.text()
    );
    let r = get(gw.addr, "/public/docs?x=1", &[]);
    assert_eq!(
        (r.status, r.header("location")),
        (308, Some("/public/docs/?x=1"))
    );
    let r = get(gw.addr, "/public/withindex/", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "<p>index</p>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get(gw.addr, "/public/nope.txt", &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn listing_when_enabled_escapes_names() {
    let (_d, config) = site(true);
    let gw = start(&config);
    let r = get(gw.addr, "/public/docs/", &[]);
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("&lt;b&gt;&amp;.txt"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    let r = get(gw.addr, "/public/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(".env"));
}

#[test]
fn files_carry_validators_and_answer_conditional_and_range_requests() {
    let (_d, config) = site(false);
    let gw = start(&config);
    let r = get(gw.addr, "/public/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_owned();
    let modified = r.header("last-modified").unwrap().to_owned();

    let r = request(gw.addr, "HEAD", "/public/hello.txt", &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("13")));

    let r = get(gw.addr, "/public/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(
        gw.addr,
        "/public/hello.txt",
        &[("If-Modified-Since", &modified)],
    );
    assert_eq!(r.status, 304);
    let r = get(
        gw.addr,
        "/public/hello.txt",
        &[("If-None-Match", "\"other\"")],
    );
    assert_eq!(r.status, 200);
    let r = get(gw.addr, "/public/hello.txt", &[("If-Match", "\"other\"")]);
    assert_eq!(r.status, 412);

    let r = get(gw.addr, "/public/hello.txt", &[("Range", "bytes=0-4")]);
    assert_eq!((r.status, r.text().as_str()), (206, "hello"));
    assert_eq!(r.header("content-range"), Some("bytes 0-4/13"));
    let r = get(gw.addr, "/public/hello.txt", &[("Range", "bytes=-6")]);
    assert_eq!((r.status, r.text().as_str()), (206, "world\n"));
    let r = get(
        gw.addr,
        "/public/hello.txt",
        &[("Range", "bytes=0-4"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(r.status, 200);
    let r = get(gw.addr, "/public/hello.txt", &[("Range", "bytes=100-")]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (416, Some("RangeNotSatisfiable"))
    );
    assert_eq!(r.header("content-range"), Some("bytes */13"));

    let r = request(gw.addr, "POST", "/public/hello.txt", &[], b"x");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}
