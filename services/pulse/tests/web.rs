//! `pulse serve --target web` alone: it needs no database (ready with PostgreSQL unreachable),
//! serves the page and its files (gzip when asked, cached for good under the build's version),
//! never spends the edge rate limit on them, and serves no API.

mod common;

use common::{Ports, Process};

#[tokio::test]
async fn the_web_target_serves_the_app_without_a_database() {
    let instance = format!("webonly{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = common::work_dir(&instance);
    let ports = Ports::free();
    // Nothing listens on port 1: a component that needed PostgreSQL would never be ready.
    let mut command = common::serve(
        "web",
        "postgres://pulse:pulse@127.0.0.1:1/nowhere",
        &instance,
        ports,
    );
    command
        .env("PULSE_COUNTRY__RATE_LIMITS__REQUESTS_PER_SECOND", "1")
        .env("PULSE_COUNTRY__RATE_LIMITS__BURST", "1");
    let process = Process::spawn(command, dir.join("web.log"));
    let client = reqwest::Client::new();
    common::wait_ready(&client, ports.http, &process, "web").await;
    let base = format!("http://127.0.0.1:{}", ports.http);

    let page = client.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-cache");
    assert!(header("content-security-policy").contains("script-src 'self'"));
    let html = page.text().await.expect("html");
    assert!(html.contains("<html lang=\"fr\">"), "{html}");
    assert!(html.contains("\"timezone\":\"Europe/Paris\""), "{html}");
    let script = format!("/assets/{}/app.js", pulse_web::VERSION);
    assert!(html.contains(&script), "{html}");

    // Far more requests than the limit (1/s, burst 1) allows: the files are never limited.
    for _ in 0..20 {
        let plain = client
            .get(format!("{base}{script}"))
            .send()
            .await
            .expect("app.js");
        assert_eq!(plain.status(), 200);
        assert!(plain.headers().get("content-encoding").is_none());
        assert!(
            plain.headers()["cache-control"]
                .to_str()
                .expect("ascii")
                .contains("immutable")
        );
        assert!(plain.text().await.expect("js").contains("import"));
    }
    let gzip = client
        .get(format!("{base}{script}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("app.js gzip");
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let bytes = gzip.bytes().await.expect("bytes");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");

    // Another build's file, or an API: 404 problems, no page.
    for path in ["/assets/0000/app.js", "/v1/appointments"] {
        let missing = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(missing.status(), 404, "{path}");
        assert_eq!(
            missing.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    drop(process);
}
