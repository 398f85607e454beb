//! `crdgen`: writes the CRD YAML of Pulse's custom resources into `crds/` and
//! `charts/pulse/crds/` (or the directories given as arguments).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let dirs = if args.is_empty() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        vec![root.join("crds"), root.join("charts/pulse/crds")]
    } else {
        args
    };
    let files = match pulse_operator::crd::crd_files() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("crdgen: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    for dir in &dirs {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("crdgen: cannot create {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
        for (name, text) in &files {
            let path = dir.join(name);
            if let Err(err) = std::fs::write(&path, text) {
                eprintln!("crdgen: cannot write {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
