//! Country → continent, for databases that only give a country (the DB-IP flat schema).
//!
//! Codes follow GeoNames, which MaxMind's `continent.code` also uses, so both schemas put a
//! country on the same continent. Transcontinental countries go where GeoNames puts them
//! (RU and CY in EU; TR, GE, AM, AZ and KZ in AS).

const CONTINENTS: [(&str, &str); 7] = [
    // Africa
    (
        "AF",
        concat!(
            "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE ",
            "KM LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST ",
            "SZ TD TG TN TZ UG YT ZA ZM ZW",
        ),
    ),
    // Antarctica
    ("AN", "AQ BV GS HM TF"),
    // Asia
    (
        "AS",
        concat!(
            "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP ",
            "KR KW KZ LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TM TR ",
            "TW UZ VN YE",
        ),
    ),
    // Europe
    (
        "EU",
        concat!(
            "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU ",
            "IE IM IS IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ ",
            "SK SM UA VA XK",
        ),
    ),
    // North America
    (
        "NA",
        concat!(
            "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY ",
            "LC MF MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI",
        ),
    ),
    // Oceania
    (
        "OC",
        concat!(
            "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TL TO TV UM ",
            "VU WF WS",
        ),
    ),
    // South America
    ("SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
];

/// The continent code (`AF AN AS EU NA OC SA`) of an ISO 3166-1 alpha-2 country code, in any
/// case. `None` for anything else.
pub fn continent_of(country: &str) -> Option<&'static str> {
    let &[a, b] = country.as_bytes() else {
        return None;
    };
    if !a.is_ascii_alphabetic() || !b.is_ascii_alphabetic() {
        return None;
    }
    let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    CONTINENTS
        .iter()
        .find(|(_, countries)| countries.as_bytes().chunks(3).any(|c| c[..2] == code))
        .map(|(continent, _)| *continent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_well_formed() {
        let mut seen = HashSet::new();
        for (continent, countries) in CONTINENTS {
            for chunk in countries.as_bytes().chunks(3) {
                assert!(
                    chunk[..2].iter().all(u8::is_ascii_uppercase),
                    "{continent}: {chunk:?}"
                );
                assert!(
                    chunk.len() == 2 || chunk[2] == b' ',
                    "{continent}: {chunk:?}"
                );
                assert!(seen.insert(chunk[..2].to_vec()), "duplicate {chunk:?}");
            }
        }
        // The 249 ISO 3166-1 codes plus XK (Kosovo), which MaxMind and DB-IP both use.
        assert_eq!(seen.len(), 250);
    }

    #[test]
    fn known_countries() {
        let cases = [
            ("GB", Some("EU")),
            ("gb", Some("EU")),
            ("US", Some("NA")),
            ("AU", Some("OC")),
            ("BR", Some("SA")),
            ("SG", Some("AS")),
            ("ZA", Some("AF")),
            ("AQ", Some("AN")),
            ("RU", Some("EU")),
            ("ZZ", None),
            ("G", None),
            ("GBR", None),
            ("1A", None),
            ("", None),
        ];
        for (country, want) in cases {
            assert_eq!(continent_of(country), want, "{country}");
        }
    }
}
