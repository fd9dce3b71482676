use super::*;
use http::HeaderMap;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
max_batch = 100
[quic]
listen = "127.0.0.1:0"
key_file = "gw.key"
join_tokens = ["0123456789"]
[[chains]]
name = "anvil"
chain_id = 31337
[[chains]]
name = "other"
chain_id = 5
"#;

/// A tenancy over a tenants file in a temp dir (kept alive by the returned dir).
fn tenancy(file: &str) -> (Tenancy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, file).unwrap();
    let text = format!(
        "{GOOD}\n[tenants]\nfile = {:?}\n",
        path.display().to_string()
    );
    let config = Config::parse(&text, "g.toml").unwrap();
    (
        Tenancy::load(&config, Arc::new(Metrics::new())).unwrap(),
        dir,
    )
}

fn tenant_file(name: &str, key: &str, extra: &str) -> String {
    format!(
        "[[tenants]]\nname = \"{name}\"\nkey_sha256 = [\"{}\"]\n{extra}\n",
        hash_key_hex(key)
    )
}

/// One tenant "a" with key "k" and `extra` settings: the tenancy, its set and the tenant.
fn one_tenant(extra: &str) -> (Tenancy, tempfile::TempDir, Arc<Tenants>, Arc<Tenant>) {
    let (t, dir) = tenancy(&tenant_file("a", "k", extra));
    let set = t.current_full();
    let a = t
        .identify(&set, Some("k"), &HeaderMap::new())
        .unwrap()
        .unwrap();
    (t, dir, set, a)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn keys_are_found_in_the_url_and_both_headers_and_hashed() {
    let (t, _dir) = tenancy(&tenant_file("a", "key-a", "chains = [\"anvil\"]"));
    let set = t.current();
    let who = |url: Option<&str>, h: &[(&str, &str)]| {
        t.identify(&set, url, &headers(h))
            .map(|o| o.map(|t| t.name.clone()))
    };
    assert_eq!(who(Some("key-a"), &[]), Ok(Some("a".into())));
    assert_eq!(who(None, &[("x-api-key", "key-a")]), Ok(Some("a".into())));
    assert_eq!(
        who(None, &[("authorization", "bearer key-a")]),
        Ok(Some("a".into()))
    );
    assert_eq!(
        who(Some("key-a"), &[("x-api-key", "key-a")]),
        Ok(Some("a".into()))
    );
    assert_eq!(
        who(None, &[]),
        Ok(None),
        "keyless callers are served by default"
    );
    assert_eq!(who(Some("nope"), &[]), Err(Denied::BadKey));
    assert_eq!(
        who(Some("key-a"), &[("x-api-key", "key-b")]),
        Err(Denied::ConflictingKeys)
    );
    let a = t
        .identify(&set, Some("key-a"), &HeaderMap::new())
        .unwrap()
        .unwrap();
    assert!(a.chain_allowed(31337) && !a.chain_allowed(5));
    assert_eq!(hash_key_hex("abc").len(), 64);
}

#[test]
fn compute_units_run_out_faster_for_heavy_methods() {
    let (t, _dir, set, a) = one_tenant("compute_units_per_second = 300");
    let addr: IpAddr = "192.0.2.1".parse().unwrap();
    let batch = |method: &str| vec![set.cost(method); 10];
    let refused = t.charge(&set, Some(&a), addr, &batch("eth_chainId"));
    assert!(refused.is_empty(), "10 x eth_chainId cost 10 of 300");
    let refused = t.charge(&set, Some(&a), addr, &batch("eth_getLogs"));
    // 290 left, 75 each: three pass, seven are refused over compute units.
    assert_eq!(refused.len(), 7);
    assert!(refused
        .iter()
        .all(|(_, r)| r.limit == Limit::ComputeUnits && r.retry_after >= 1));
    assert_eq!(a.budget.admitted.load(Relaxed), 13);
}

#[test]
fn a_batch_over_the_request_rate_is_served_in_part() {
    let (t, _dir, set, a) = one_tenant("requests_per_second = 5\ndaily_quota = 8");
    let addr: IpAddr = "192.0.2.1".parse().unwrap();
    let refused = t.charge(&set, Some(&a), addr, &[1; 7]);
    assert_eq!(
        refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(refused[0].1.limit, Limit::Requests);
    // Refilled (as the sync task does), the daily quota of 8 is what stops it now.
    a.budget.requests.refill(1.0, 1.0);
    let refused = t.charge(&set, Some(&a), addr, &[1; 5]);
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].1.limit, Limit::Daily);
    assert!(refused[0].1.retry_after <= 86_400);
}

#[test]
fn keyless_callers_are_limited_per_address() {
    let (t, _dir) = tenancy("[keyless]\nrequests_per_second = 3\n");
    let set = t.current_full();
    let flood: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert!(t.charge(&set, None, flood, &[1; 3]).is_empty());
    let refused = t.charge(&set, None, flood, &[1; 2]);
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].1.limit, Limit::AddressRequests);
    assert!(
        t.charge(&set, None, other, &[1; 3]).is_empty(),
        "its own budget"
    );
    // An IPv6 caller is one /64.
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::2".parse().unwrap();
    assert!(t.charge(&set, None, a, &[1; 3]).is_empty());
    assert_eq!(t.charge(&set, None, b, &[1]).len(), 1);
}

#[test]
fn keyless_callers_can_be_refused() {
    let (t, _dir) = tenancy("[keyless]\nserve = false\n");
    let set = t.current();
    assert_eq!(
        t.identify(&set, None, &HeaderMap::new()).map(|_| ()),
        Err(Denied::KeyRequired)
    );
}

#[test]
fn a_bad_file_keeps_the_previous_set_and_a_good_one_revokes_keys() {
    let (t, dir) = tenancy(&format!(
        "{}{}",
        tenant_file("a", "key-a", ""),
        tenant_file("b", "key-b", "")
    ));
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, "[[tenants]]\nname = \"a\"\nkey_sha256 = [\"zz\"]\n").unwrap();
    let e = t.reload().unwrap_err().to_string();
    assert!(e.contains("tenants[0].key_sha256[0]"), "{e}");
    let set = t.current();
    assert!(t.identify(&set, Some("key-b"), &HeaderMap::new()).is_ok());
    std::fs::write(&path, tenant_file("a", "key-a", "")).unwrap();
    assert_eq!(t.reload().unwrap(), 1);
    let set = t.current();
    assert_eq!(
        t.identify(&set, Some("key-b"), &HeaderMap::new())
            .map(|_| ()),
        Err(Denied::BadKey)
    );
    assert!(t.identify(&set, Some("key-a"), &HeaderMap::new()).is_ok());
}

#[test]
fn origins_decide_cors_only_for_browsers() {
    let (_t, _dir, _set, a) =
        one_tenant("origins = [\"http://127.0.0.1:3000\", \"chrome-extension://abc\"]");
    use crate::front::cors::{for_tenant, Cors};
    let o = |s: &'static str| s.as_bytes();
    assert_eq!(
        for_tenant(&a, None),
        Ok(Cors::Any),
        "no Origin: not a browser"
    );
    assert_eq!(
        for_tenant(&a, Some(o("http://127.0.0.1:3000"))),
        Ok(Cors::Echo)
    );
    assert_eq!(
        for_tenant(&a, Some(o("chrome-extension://abc"))),
        Ok(Cors::Echo)
    );
    assert_eq!(
        for_tenant(&a, Some(o("http://evil.example"))),
        Err(Denied::Origin)
    );
}
