//! What messages say: templates per kind and language, rendered with the country's time zone
//! and currency.
//!
//! Placeholder until the template files land: renders one plain line per kind.

pub mod format;

use pulse_kit::config::CountryConfig;

use crate::domain::{Language, Notice};

/// A notice written out for every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// E-mail subject; also the in-app title.
    pub subject: String,
    /// E-mail text part.
    pub text: String,
    /// E-mail HTML part.
    pub html: String,
    /// SMS text; also the in-app body.
    pub sms: String,
}

/// Why a notice could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render {kind} in {language}: {message}")]
pub struct ContentError {
    /// The notice's kind.
    pub kind: String,
    /// The language.
    pub language: &'static str,
    /// What failed.
    pub message: String,
}

/// The templates, loaded once.
#[derive(Debug, Clone, Default)]
pub struct Templates;

impl Templates {
    /// Loads the templates embedded in the binary.
    pub fn load() -> Result<Self, ContentError> {
        Ok(Self)
    }

    /// Writes `notice` in `language` for a recipient called `name` (if known), with times in
    /// `country`'s time zone and money in its format.
    pub fn render(
        &self,
        notice: &Notice,
        language: Language,
        country: &CountryConfig,
        name: Option<&str>,
    ) -> Result<Rendered, ContentError> {
        let _ = (country, name);
        let line = format!("{} ({})", notice.kind(), language.as_str());
        Ok(Rendered {
            subject: line.clone(),
            text: line.clone(),
            html: format!("<p>{line}</p>"),
            sms: line,
        })
    }
}
