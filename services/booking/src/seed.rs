//! Demo data: hundreds of practitioners over several cities and specialties, deterministic
//! (same ids every run), so seeding twice changes nothing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::domain::{PractitionerInput, Schedule};
use crate::flow::BookingError;
use crate::practitioners::Practitioners;

/// A city of the demo data set.
struct City {
    name: &'static str,
    lat: f64,
    lon: f64,
    streets: &'static [&'static str],
}

const FR_CITIES: &[City] = &[
    City {
        name: "Paris",
        lat: 48.8566,
        lon: 2.3522,
        streets: &[
            "rue de Rivoli",
            "boulevard Voltaire",
            "rue de Vaugirard",
            "avenue de la République",
        ],
    },
    City {
        name: "Lyon",
        lat: 45.7640,
        lon: 4.8357,
        streets: &["rue de la République", "cours Lafayette", "rue Garibaldi"],
    },
    City {
        name: "Marseille",
        lat: 43.2965,
        lon: 5.3698,
        streets: &["La Canebière", "rue Paradis", "boulevard Baille"],
    },
    City {
        name: "Toulouse",
        lat: 43.6047,
        lon: 1.4442,
        streets: &["rue d'Alsace-Lorraine", "allées Jean Jaurès"],
    },
    City {
        name: "Bordeaux",
        lat: 44.8378,
        lon: -0.5792,
        streets: &["cours de l'Intendance", "rue Sainte-Catherine"],
    },
    City {
        name: "Lille",
        lat: 50.6292,
        lon: 3.0573,
        streets: &["rue Nationale", "boulevard de la Liberté"],
    },
    City {
        name: "Nantes",
        lat: 47.2184,
        lon: -1.5536,
        streets: &["rue Crébillon", "cours des 50 Otages"],
    },
];

const DE_CITIES: &[City] = &[
    City {
        name: "Berlin",
        lat: 52.5200,
        lon: 13.4050,
        streets: &["Friedrichstraße", "Kurfürstendamm", "Karl-Marx-Allee"],
    },
    City {
        name: "München",
        lat: 48.1351,
        lon: 11.5820,
        streets: &["Leopoldstraße", "Sendlinger Straße"],
    },
    City {
        name: "Hamburg",
        lat: 53.5511,
        lon: 9.9937,
        streets: &["Mönckebergstraße", "Jungfernstieg"],
    },
    City {
        name: "Köln",
        lat: 50.9375,
        lon: 6.9603,
        streets: &["Hohe Straße", "Aachener Straße"],
    },
    City {
        name: "Frankfurt am Main",
        lat: 50.1109,
        lon: 8.6821,
        streets: &["Zeil", "Berger Straße"],
    },
];

const SPECIALTIES: &[&str] = &[
    "general-practice",
    "dentistry",
    "dermatology",
    "pediatrics",
    "gynecology",
    "ophthalmology",
    "cardiology",
    "physiotherapy",
];

const FIRST: &[&str] = &[
    "Camille", "Léa", "Hugo", "Louis", "Emma", "Jonas", "Mia", "Paul", "Sofia", "Lukas", "Inès",
    "Noah",
];
const LAST: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Müller", "Schmidt", "Petit", "Weber", "Moreau", "Fischer",
    "Laurent", "Wagner", "Roux",
];

/// Practitioners seeded per country.
pub const DEMO_PRACTITIONERS: usize = 240;

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// No demo data set for the country.
    #[error("no demo data for country {0}; known: FR, DE")]
    UnknownCountry(String),
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] BookingError),
}

/// Loads the demo practitioners of `country` (`FR` or `DE`) through the practitioner flow, then
/// the GEO index; returns how many practitioners were new.
pub async fn seed(
    practitioners: &Practitioners,
    country: &pulse_kit::config::CountryConfig,
) -> Result<usize, SeedError> {
    let cities = match country.code.as_str() {
        "FR" => FR_CITIES,
        "DE" => DE_CITIES,
        other => return Err(SeedError::UnknownCountry(other.to_owned())),
    };
    let language = country.locale.split('-').next().unwrap_or("en").to_owned();
    let mut rng = StdRng::seed_from_u64(
        u64::from_be_bytes(*b"pulse-01") ^ u64::from(country.code.as_bytes()[0]),
    );
    let mut created = 0;
    for index in 0..DEMO_PRACTITIONERS {
        let city = &cities[index % cities.len()];
        let specialty = SPECIALTIES[(index / cities.len()) % SPECIALTIES.len()];
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("pulse-demo/{}/{index}", country.code).as_bytes(),
        );
        let latitude = city.lat + rng.random_range(-0.05..0.05);
        let longitude = city.lon + rng.random_range(-0.07..0.07);
        let name = format!(
            "Dr {} {}",
            FIRST[rng.random_range(0..FIRST.len())],
            LAST[rng.random_range(0..LAST.len())]
        );
        let street = city.streets[rng.random_range(0..city.streets.len())];
        let mut languages = vec![language.clone()];
        if rng.random_bool(0.5) {
            languages.push("en".into());
        }
        let mut input = PractitionerInput {
            name,
            specialty: specialty.to_owned(),
            city: city.name.to_owned(),
            address: format!("{} {street}, {}", rng.random_range(1..200), city.name),
            latitude,
            longitude,
            languages,
            consultation_price_minor: [2500, 3000, 5000, 6000, 8000][rng.random_range(0..5)],
            account_subject: Some(format!("practitioner-{}-{index}", country.slug())),
            schedule: None,
        };
        match practitioners.get(id).await {
            Ok(_) => continue,
            Err(BookingError::PractitionerNotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
        let slot_minutes = [15, 20, 30][rng.random_range(0..3)];
        input.schedule = Some(Schedule::country_default(country, slot_minutes));
        let draft = input.parse().map_err(BookingError::from)?;
        practitioners.import(id, draft).await?;
        created += 1;
    }
    if let Err(err) = practitioners.sync_geo_index().await {
        tracing::warn!(error = %err, "GEO index not loaded; `near` searches fall back to the database");
    }
    Ok(created)
}
