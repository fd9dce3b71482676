//! Great-circle distance, used by routing to rank edge nodes by how far they are from a caller.

/// Mean Earth radius (IUGG), in km. The spherical model is within 0.5% of the ellipsoid, far
/// finer than what IP geolocation can tell.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Distance in km between two `(latitude, longitude)` points in degrees, by the haversine
/// formula.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points; asin would then return NaN.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONDON: (f64, f64) = (51.5074, -0.1278);
    const FRANKFURT: (f64, f64) = (50.1109, 8.6821);
    const SINGAPORE: (f64, f64) = (1.3521, 103.8198);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const SYDNEY: (f64, f64) = (-33.8688, 151.2093);

    fn assert_near(got: f64, want: f64, tolerance: f64) {
        assert!(
            (got - want).abs() <= tolerance,
            "got {got:.1} km, want {want} ± {tolerance}"
        );
    }

    #[test]
    fn known_city_pairs() {
        assert_near(haversine_km(LONDON, FRANKFURT), 640.0, 10.0);
        assert_near(haversine_km(FRANKFURT, SINGAPORE), 10_260.0, 50.0);
        assert_near(haversine_km(LONDON, NEW_YORK), 5_570.0, 30.0);
        assert_near(haversine_km(SYDNEY, SINGAPORE), 6_300.0, 30.0);
    }

    #[test]
    fn symmetric_and_zero() {
        assert_eq!(haversine_km(LONDON, LONDON), 0.0);
        assert_eq!(haversine_km(LONDON, SYDNEY), haversine_km(SYDNEY, LONDON));
    }

    #[test]
    fn antipodes_and_date_line() {
        let half_circumference = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert_near(
            haversine_km((0.0, 0.0), (0.0, 180.0)),
            half_circumference,
            1e-6,
        );
        assert_near(
            haversine_km((90.0, 0.0), (-90.0, 0.0)),
            half_circumference,
            1e-6,
        );
        // 1° of longitude across the date line at the equator, not 359°.
        assert_near(haversine_km((0.0, 179.5), (0.0, -179.5)), 111.2, 0.1);
    }
}
