//! `pulse-operator render`: the objects the reconciler would apply for a tenant file.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::crd::CountryTenant;
use crate::resources;

/// Reads one `CountryTenant` from YAML text (`origin` names it in errors).
pub fn parse_tenant(text: &str, origin: &str) -> anyhow::Result<CountryTenant> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).with_context(|| format!("{origin} is not valid YAML"))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "CountryTenant" {
        bail!("{origin} holds a `{kind}`, not a CountryTenant");
    }
    serde_path_to_error::deserialize(value)
        .map_err(|err| anyhow::anyhow!("{origin}: field `{}`: {}", err.path(), err.inner()))
}

/// The YAML stream `render` prints for the tenant in `text`.
pub fn render_text(text: &str, origin: &str) -> anyhow::Result<String> {
    let tenant = parse_tenant(text, origin)?;
    let desired = resources::desired(&tenant).with_context(|| origin.to_owned())?;
    let mut out = format!(
        "# Objects the operator applies for CountryTenant {} (server-side apply, field manager {}).\n",
        tenant.metadata.name.as_deref().unwrap_or(""),
        resources::MANAGER
    );
    if tenant.metadata.uid.is_none() {
        out.push_str(
            "# ownerReferences to the tenant are added in the cluster (they need its uid).\n",
        );
    }
    out.push_str(&desired.to_yaml()?);
    Ok(out)
}

/// Renders the tenant in `path` (`-` for standard input).
pub fn render_file(path: &Path) -> anyhow::Result<String> {
    let (text, origin) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, path.display().to_string())
    };
    render_text(&text, &origin)
}
