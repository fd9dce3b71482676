//! JSON-RPC 2.0 on the way in and out: parse a body into calls (validating each the way geth
//! does), and write the response with each caller's `id` put back unchanged.
//!
//! Ids never travel to the edge node: the gateway keeps them here and re-attaches them, so the
//! node's cache is keyed by the question alone.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use proto::rpc;
use scan::Members;

use crate::ops::metrics::KNOWN_METHODS;

mod scan;

/// One element of a request, after validation.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A well-formed call. `id` is `None` for a notification (no `id` member).
    Call {
        id: Option<Bytes>,
        method: Method,
        params: Bytes,
    },
    /// An element rejected here, with the id to answer under (`null` when unusable).
    Invalid { id: Bytes, error: Bytes },
}

impl Entry {
    pub fn id(&self) -> Option<&Bytes> {
        match self {
            Entry::Call { id, .. } => id.as_ref(),
            Entry::Invalid { id, .. } => Some(id),
        }
    }
}

/// A method name. The usual ones ([`KNOWN_METHODS`]) are shared, not copied for each call.
pub type Method = Cow<'static, str>;

/// A parsed request body.
#[derive(Debug)]
pub enum Parsed {
    Single(Entry),
    Batch(Vec<Entry>),
}

/// A failure of the body as a whole; answered with one error object and `id: null`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("empty batch")]
    EmptyBatch,
    #[error("batch too large: {len} requests, the limit is {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("invalid request: body must be a JSON object or array")]
    NotObjectOrArray,
}

impl BodyError {
    pub fn code(&self) -> i64 {
        match self {
            BodyError::Parse(_) => rpc::PARSE_ERROR,
            BodyError::EmptyBatch | BodyError::NotObjectOrArray => rpc::INVALID_REQUEST,
            BodyError::BatchTooLarge { .. } => rpc::LIMIT_EXCEEDED,
        }
    }
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// `Some` whenever the member is present, even as `null` (plain `Option` would fold `null`
/// into absent, losing the difference between `"id": null` and a notification).
impl<'a> RawRequest<'a> {
    fn members(self) -> Members<'a> {
        let raw = |v: &'a RawValue| v.get().as_bytes();
        Members {
            jsonrpc: self.jsonrpc.map(raw),
            id: self.id.map(raw),
            method: self.method.map(raw),
            params: self.params.map(raw),
        }
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

const NULL: Bytes = Bytes::from_static(b"null");

/// Longest method name accepted (real ones are under 50 characters).
pub const MAX_METHOD_LEN: usize = 128;

/// Parses a request body. `max_batch` bounds the number of batch elements.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Parsed, BodyError> {
    parse_bytes(&Bytes::copy_from_slice(body), max_batch)
}

/// Batch bodies up to this size try the one-pass parses first (bounding what they allocate
/// before the batch length is checked: at most a few MiB of element records); single objects
/// always do.
const ONE_PASS_MAX: usize = 256 * 1024;

/// [`parse`] without copying: ids and params are slices of `body`. The usual body takes one
/// pass ([`scan`]); any other is parsed by serde_json.
pub fn parse_bytes(body: &Bytes, max_batch: usize) -> Result<Parsed, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let scanned = match first {
        Some(b'[') if body.len() <= ONE_PASS_MAX => scan::batch(body, max_batch)
            .map(|items| Parsed::Batch(items.into_iter().map(|m| entry_from(body, m)).collect())),
        Some(b'{') => scan::single(body).map(|m| Parsed::Single(entry_from(body, m))),
        _ => None,
    };
    match scanned {
        Some(parsed) => Ok(parsed),
        None => parse_serde(body, max_batch),
    }
}

/// The same as [`parse_bytes`], with serde_json alone: for bodies the scan leaves alone.
fn parse_serde(body: &Bytes, max_batch: usize) -> Result<Parsed, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            // One pass when every element is an object (the usual case); the careful path
            // below tells a malformed body from a bad element otherwise.
            if body.len() <= ONE_PASS_MAX {
                if let Ok(items) = serde_json::from_slice::<Vec<RawRequest<'_>>>(body) {
                    check_batch_len(items.len(), max_batch)?;
                    return Ok(Parsed::Batch(
                        items
                            .into_iter()
                            .map(|r| entry_from(body, r.members()))
                            .collect(),
                    ));
                }
            }
            let items: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| BodyError::Parse(e.to_string()))?;
            check_batch_len(items.len(), max_batch)?;
            Ok(Parsed::Batch(
                items.into_iter().map(|raw| entry(body, raw)).collect(),
            ))
        }
        Some(b'{') => {
            if let Ok(r) = serde_json::from_slice::<RawRequest<'_>>(body) {
                return Ok(Parsed::Single(entry_from(body, r.members())));
            }
            let raw: &RawValue =
                serde_json::from_slice(body).map_err(|e| BodyError::Parse(e.to_string()))?;
            Ok(Parsed::Single(entry(body, raw)))
        }
        _ => {
            // Valid JSON that is neither object nor array is an invalid request; anything else
            // is a parse error.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| BodyError::Parse(e.to_string()))?;
            Err(BodyError::NotObjectOrArray)
        }
    }
}

fn check_batch_len(len: usize, max: usize) -> Result<(), BodyError> {
    match len {
        0 => Err(BodyError::EmptyBatch),
        len if len > max => Err(BodyError::BatchTooLarge { len, max }),
        _ => Ok(()),
    }
}

fn invalid(id: Bytes, msg: &str) -> Entry {
    Entry::Invalid {
        id,
        error: rpc::error_object(rpc::INVALID_REQUEST, format!("invalid request: {msg}")),
    }
}

fn entry(body: &Bytes, raw: &RawValue) -> Entry {
    let text = raw.get();
    if !text.starts_with('{') {
        return invalid(NULL, "each request must be a JSON object");
    }
    match serde_json::from_str(text) {
        Ok(r) => entry_from(body, RawRequest::members(r)),
        Err(e) => invalid(NULL, &e.to_string()),
    }
}

fn entry_from(body: &Bytes, r: Members<'_>) -> Entry {
    // Members are slices of the body (zero-copy `Bytes`).
    let slice = |v: &[u8]| body.slice_ref(v);
    // The id first, so later errors can be answered under it.
    let id = match r.id {
        None => None,
        Some(v) => {
            let ok = v == b"null" || matches!(v[0], b'"' | b'-' | b'0'..=b'9');
            if !ok {
                return invalid(NULL, "id must be a string, number or null");
            }
            Some(slice(v))
        }
    };
    let answer_id = id.clone().unwrap_or(NULL);
    if r.jsonrpc != Some(b"\"2.0\"") {
        return invalid(answer_id, "jsonrpc must be \"2.0\"");
    }
    let method = match r.method.map(method_name) {
        Some(Ok(m)) if m.len() > MAX_METHOD_LEN => {
            return invalid(answer_id, "method name too long")
        }
        Some(Ok(m)) if !m.is_empty() => m,
        Some(Ok(_)) => return invalid(answer_id, "method must not be empty"),
        _ => return invalid(answer_id, "method must be a string"),
    };
    let params = match r.params {
        None => None,
        Some(b"null") => None,
        Some(p) if matches!(p[0], b'[' | b'{') => Some(slice(p)),
        Some(_) => return invalid(answer_id, "params must be an array or an object"),
    };
    Entry::Call {
        id,
        method,
        params: params.unwrap_or_default(),
    }
}

/// The method member's string; one without escapes is taken as it is.
fn method_name(raw: &[u8]) -> Result<Method, ()> {
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            match KNOWN_METHODS.iter().find(|m| m.as_bytes() == inner) {
                Some(known) => Ok(Cow::Borrowed(known)),
                None => std::str::from_utf8(inner)
                    .map(|m| Cow::Owned(m.to_owned()))
                    .map_err(drop),
            }
        }
        _ => serde_json::from_slice::<String>(raw)
            .map(Cow::Owned)
            .map_err(drop),
    }
}

/// Is `method` refused by a deny list (`prefix_*` entries match prefixes)?
pub fn denied(deny: &[String], method: &str) -> bool {
    deny.iter().any(|d| match d.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => d == method,
    })
}

// === Responses ===

/// Appends one response object.
pub fn write_response(out: &mut BytesMut, id: &[u8], result: Result<&[u8], &[u8]>) {
    out.put_slice(OPEN);
    out.put_slice(id);
    match result {
        Ok(r) => {
            out.put_slice(RESULT);
            out.put_slice(r);
        }
        Err(e) => {
            out.put_slice(b",\"error\":");
            out.put_slice(e);
        }
    }
    out.put_slice(CLOSE);
}

const OPEN: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":";
const RESULT: &[u8] = b",\"result\":";
const CLOSE: &[u8] = b"}";

/// What [`write_response`] writes around a result: `(before, after)`.
pub fn result_envelope(id: &[u8]) -> (Vec<u8>, &'static [u8]) {
    ([OPEN, id, RESULT].concat(), CLOSE)
}

/// A whole-body error response (`id: null`).
pub fn body_error(e: &BodyError) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    write_response(
        &mut out,
        b"null",
        Err(&rpc::error_object(e.code(), e.to_string())),
    );
    out.freeze()
}

/// One error response under `id: null` with the given code and message.
pub fn error_response(code: i64, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    write_response(&mut out, b"null", Err(&rpc::error_object(code, message)));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Entry {
        match parse(body.as_bytes(), 10).unwrap() {
            Parsed::Single(e) => e,
            other => panic!("{other:?}"),
        }
    }

    fn invalid_code(e: &Entry) -> Option<(String, i64)> {
        match e {
            Entry::Invalid { id, error } => {
                let v: serde_json::Value = serde_json::from_slice(error).unwrap();
                Some((
                    String::from_utf8(id.to_vec()).unwrap(),
                    v["code"].as_i64().unwrap(),
                ))
            }
            _ => None,
        }
    }

    #[test]
    fn body_level_errors() {
        assert!(matches!(parse(b"{", 10), Err(BodyError::Parse(_))));
        assert!(matches!(parse(b"", 10), Err(BodyError::Parse(_))));
        assert!(matches!(parse(b"[1,", 10), Err(BodyError::Parse(_))));
        assert_eq!(parse(b" [ ] ", 10).unwrap_err(), BodyError::EmptyBatch);
        assert_eq!(parse(b"42", 10).unwrap_err(), BodyError::NotObjectOrArray);
        assert_eq!(
            parse(b"[1,2,3]", 2).unwrap_err(),
            BodyError::BatchTooLarge { len: 3, max: 2 }
        );
        assert_eq!(BodyError::Parse("x".into()).code(), -32700);
        assert_eq!(BodyError::EmptyBatch.code(), -32600);
    }

    #[test]
    fn element_validation_table() {
        let rows = [
            (r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"m","params":[]}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"m","params":{}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"1.0","id":7,"method":"m"}"#,
                Some(("7", -32600)),
            ),
            (r#"{"id":7,"method":"m"}"#, Some(("7", -32600))),
            (r#"{"jsonrpc":"2.0","id":7}"#, Some(("7", -32600))),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":5}"#,
                Some(("7", -32600)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":""}"#,
                Some(("7", -32600)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"m","params":"x"}"#,
                Some(("7", -32600)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#,
                Some(("null", -32600)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
                Some(("null", -32600)),
            ),
        ];
        for (body, want) in rows {
            let got = invalid_code(&single(body));
            assert_eq!(got, want.map(|(i, c)| (i.to_string(), c)), "{body}");
        }
    }

    #[test]
    fn one_pass_and_careful_parses_agree() {
        // All objects: the one-pass path. One duplicate member: the careful path, which
        // refuses only that element.
        let good = br#"[{"jsonrpc":"2.0","id":1,"method":"a","params":[1]},{"jsonrpc":"2.0","id":"b","method":"b"}]"#;
        let dup = br#"[{"jsonrpc":"2.0","id":1,"method":"a","params":[1]},{"jsonrpc":"2.0","id":"b","method":"b","method":"c"}]"#;
        let (Ok(Parsed::Batch(g)), Ok(Parsed::Batch(d))) = (parse(good, 10), parse(dup, 10)) else {
            panic!("both are batches");
        };
        assert_eq!(format!("{:?}", g[0]), format!("{:?}", d[0]));
        assert!(matches!(&g[1], Entry::Call { method, .. } if method == "b"));
        assert!(matches!(&d[1], Entry::Invalid { .. }), "{:?}", d[1]);
        // Ids and params are slices of the body, not copies.
        let body = Bytes::from_static(good);
        let Ok(Parsed::Batch(e)) = parse_bytes(&body, 10) else {
            panic!()
        };
        let Entry::Call { params, .. } = &e[0] else {
            panic!()
        };
        assert_eq!(&params[..], b"[1]");
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(range.contains(&(params.as_ptr() as usize)));
    }

    /// The one-pass scan and serde_json give the same answer (calls, errors, ids, params)
    /// for well-formed bodies, odd ones, and many mutations of both.
    #[test]
    fn scan_and_serde_agree() {
        let seeds: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39f",{"blockHash":"0x8c2d"}]}"#,
            br#" [ {"jsonrpc":"2.0","id":"a","method":"m","params":[1,-2.5e+3,true,false,null,{}]} ,{"id":null,"jsonrpc":"2.0","method":"n"}] "#,
            br#"{"jsonrpc":"2.0","id":-0,"method":"m","params":{"a":[[[]]],"b":"x y"},"extra":[1,{"k":0.0E-1}]}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"a","params":[1]},{"jsonrpc":"2.0","id":"b","method":"b","method":"c"}]"#,
            br#"{"jsonrpc":"2.0","id":"x\"y","method":"e\u0074h","params":["\u00e9"]}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":[\"caf\u{e9}\"]}".as_bytes(),
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},5,{"jsonrpc":"2.0","id":2},[1]]"#,
            br#"{}"#,
            // Names that start like a request's own (the scan tells them apart by first letter).
            br#"{"jsonrpcx":1,"jsonrpc":"2.0","i":0,"idx":1,"id":2,"methods":"x","method":"m","p":0,"paramsX":[],"params":[]}"#,
        ];
        let alphabet = b"{}[]\",:\\ 0123456789abcdefnrtule-+.E\t\n\x0c\x00\x7f\xc3";
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut scanned = 0;
        for seed in seeds {
            for round in 0..3000 {
                let mut b = seed.to_vec();
                for _ in 0..(round % 4) {
                    let at = next(b.len() + 1);
                    match next(3) {
                        0 if at < b.len() => {
                            b.remove(at);
                        }
                        1 if at < b.len() => b[at] = alphabet[next(alphabet.len())],
                        _ => b.insert(at, alphabet[next(alphabet.len())]),
                    }
                }
                let body = Bytes::from(b);
                for max in [2, 10] {
                    let fast = format!("{:?}", parse_bytes(&body, max));
                    let slow = format!("{:?}", parse_serde(&body, max));
                    assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&body));
                }
                scanned +=
                    usize::from(scan::single(&body).is_some() || scan::batch(&body, 10).is_some());
            }
        }
        // The scan took a good share of them (else this compared serde with itself).
        assert!(scanned > 3000, "{scanned}");
    }

    #[test]
    fn ids_and_notifications_are_kept_apart() {
        match single(r#"{"jsonrpc":"2.0","method":"m"}"#) {
            Entry::Call { id: None, .. } => {}
            other => panic!("{other:?}"),
        }
        match single(r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#) {
            Entry::Call { id: Some(id), .. } => assert_eq!(&id[..], b"null"),
            other => panic!("{other:?}"),
        }
        match single(r#"{"jsonrpc":"2.0","id":"x\"y","method":"m","params":null}"#) {
            Entry::Call {
                id: Some(id),
                params,
                ..
            } => {
                assert_eq!(&id[..], br#""x\"y""#);
                assert!(params.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_elements_fail_on_their_own() {
        let Parsed::Batch(v) = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 5, {"jsonrpc":"2.0","id":2}]"#,
            10,
        )
        .unwrap() else {
            panic!()
        };
        assert!(matches!(v[0], Entry::Call { .. }));
        assert_eq!(invalid_code(&v[1]), Some(("null".into(), -32600)));
        assert_eq!(invalid_code(&v[2]), Some(("2".into(), -32600)));
    }

    #[test]
    fn deny_list_matches_prefixes_and_names() {
        let deny: Vec<String> = crate::config::DEFAULT_DENY
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in [
            "anvil_reorg",
            "evm_mine",
            "debug_setHead",
            "personal_sign",
            "admin_peers",
        ] {
            assert!(denied(&deny, m), "{m}");
        }
        for m in ["eth_call", "debug_traceTransaction", "net_version"] {
            assert!(!denied(&deny, m), "{m}");
        }
    }

    #[test]
    fn responses_are_valid_json() {
        let mut out = BytesMut::new();
        write_response(&mut out, b"\"a\"", Ok(b"\"0x1\""));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":"a","result":"0x1"})
        );
        let e: serde_json::Value =
            serde_json::from_slice(&body_error(&BodyError::EmptyBatch)).unwrap();
        assert_eq!(e["error"]["code"], -32600);
        assert!(e["id"].is_null());
    }
}
