//! Embeds the web app's files (`assets/`): each is compressed with gzip once, here, and both
//! forms are included in the binary with a content type; `VERSION` (a hash of every file) names
//! the asset URLs, so browsers may cache them for good. `index.html` is the page template.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let assets = root.join("assets");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo::rerun-if-changed=assets");
    let mut files = Vec::new();
    collect(&assets, &assets, &mut files);
    files.sort();
    let mut version = Sha256::new();
    let mut table = String::new();
    for relative in &files {
        let path = assets.join(relative);
        println!("cargo::rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).expect("asset");
        version.update(relative.as_bytes());
        version.update(&bytes);
        if relative == "index.html" {
            continue;
        }
        let gzip_name = format!("{}.gz", relative.replace('/', "__"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&bytes).expect("gzip");
        std::fs::write(out.join(&gzip_name), encoder.finish().expect("gzip")).expect("write");
        writeln!(
            table,
            "    Asset {{ path: {relative:?}, content_type: {:?}, plain: include_bytes!({:?}), gzip: include_bytes!({:?}) }},",
            content_type(relative),
            path.display().to_string(),
            out.join(&gzip_name).display().to_string(),
        )
        .expect("write");
    }
    let version: String = version.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let code = format!(
        "/// Names this build's asset URLs (`/assets/{{VERSION}}/app.js`).\npub const VERSION: &str = {version:?};\n\n/// The page template.\npub const INDEX_TEMPLATE: &str = include_str!({:?});\n\n/// Every embedded file but the page template.\npub static FILES: &[Asset] = &[\n{table}];\n",
        assets.join("index.html").display().to_string()
    );
    std::fs::write(out.join("assets.rs"), code).expect("write");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("assets dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("prefix");
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("html") => "text/html; charset=utf-8",
        Some("png") => "image/png",
        _ => panic!("asset {path}: add its content type to build.rs"),
    }
}
