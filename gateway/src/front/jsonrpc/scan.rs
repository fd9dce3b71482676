//! One pass over the usual shape of a JSON-RPC body: an object, or an array of objects, all
//! ASCII and free of escapes in member names and in strings (in a JSON-RPC body: hex). It validates the whole body as
//! JSON and finds the four members a request has, and nothing else: no value is built.
//!
//! It is conservative: whatever it is unsure of (escapes, non-ASCII bytes, duplicate members,
//! deep nesting, anything that is not JSON) makes it give up (`None`), and the caller parses
//! with serde_json, which gives the same answer for accepted bodies and its own error
//! messages for the rest. The tests check that both agree on every body this accepts.

/// The members of one request object, each as its raw JSON text (absent: `None`).
#[derive(Default)]
pub(super) struct Members<'a> {
    pub jsonrpc: Option<&'a [u8]>,
    pub id: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub params: Option<&'a [u8]>,
}

/// The members a request has.
#[derive(Clone, Copy)]
enum Name {
    Jsonrpc,
    Id,
    Method,
    Params,
}

/// Deeper than this, the careful path decides (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// A body that is one request object.
pub(super) fn single(body: &[u8]) -> Option<Members<'_>> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    let m = s.request()?;
    s.ws();
    s.at_end().then_some(m)
}

/// A body that is a non-empty array of request objects. `max`: more elements than this and
/// it gives up (the careful path counts them without keeping them).
pub(super) fn batch(body: &[u8], max: usize) -> Option<Vec<Members<'_>>> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    // About 100 bytes per element: sized once for the usual batch.
    let mut out = Vec::with_capacity((body.len() / 100).clamp(1, max.max(1)));
    s.items(b'[', b']', false, |s| {
        out.push(s.request()?);
        (out.len() <= max).then_some(())
    })?;
    s.ws();
    s.at_end().then_some(out)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// JSON's four whitespace bytes (not form feed, which `is_ascii_whitespace` allows).
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A request object: its four members, anything else checked and skipped.
    fn request(&mut self) -> Option<Members<'a>> {
        let mut m = Members::default();
        self.items(b'{', b'}', true, |s| {
            let name = s.key()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let (b, start) = (s.b, s.i);
            s.value(1)?;
            let slot = match name {
                Some(Name::Jsonrpc) => &mut m.jsonrpc,
                Some(Name::Id) => &mut m.id,
                Some(Name::Method) => &mut m.method,
                Some(Name::Params) => &mut m.params,
                None => return Some(()),
            };
            // A repeated member is an error to serde: its path words it.
            slot.replace(&b[start..s.i]).is_none().then_some(())
        })?;
        Some(m)
    }

    /// The elements of the object or array that opens next, up to `close`, each read by
    /// `item` (for an object, a whole member); `{}` or `[]` only if `empty` allows it.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        empty: bool,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.ws();
        if empty && self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            match self.next()? {
                b',' => {}
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// A member name: one of the four of a request, told apart by its first letter and then
    /// matched whole (`None`: any other name, scanned).
    fn key(&mut self) -> Option<Option<Name>> {
        // Fixed-length comparisons, which compile to a load or two rather than a `memcmp` call;
        // the length matched is the name's, quotes included.
        fn is<const N: usize>(rest: &[u8], word: &[u8; N], name: Name) -> Option<(Name, usize)> {
            (rest.get(..N) == Some(&word[..])).then_some((name, N))
        }
        let rest = &self.b[self.i..];
        let known = match rest.get(1) {
            Some(b'j') => is(rest, b"\"jsonrpc\"", Name::Jsonrpc),
            Some(b'i') => is(rest, b"\"id\"", Name::Id),
            Some(b'm') => is(rest, b"\"method\"", Name::Method),
            Some(b'p') => is(rest, b"\"params\"", Name::Params),
            _ => None,
        };
        let Some((name, len)) = known else {
            return self.string().map(|_| None);
        };
        self.i += len;
        Some(Some(name))
    }

    /// Any JSON value, checked and skipped.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.items(b'{', b'}', true, |s| {
                s.string()?;
                s.ws();
                s.eat(b':')?;
                s.ws();
                s.value(depth + 1)
            }),
            b'[' => self.items(b'[', b']', true, |s| s.value(depth + 1)),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    /// A string of printable ASCII without escapes, quotes included in what it returns.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let len = plain_run(rest);
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.i += len + 1;
        Some(&self.b[start..self.i])
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
        }
        Some(())
    }

    /// At least one digit.
    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then(|| self.digits())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// How many bytes at the start of `b` are [`plain`]: eight at a time (a string's end may lie
/// inside the eight; reading past it is harmless), byte by byte only in the body's last seven.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Flags the zero bytes of `x`: the lowest flag is the first zero (a borrow only runs
    // upwards, from a byte that is itself flagged), so it tells where a string stops.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut n = 0;
    while let Some(chunk) = b.get(n..n + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let stop = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            // A byte below 0x20 (its subtraction borrows into the high bit), or one with its
            // high bit set.
            | ((x.wrapping_sub(ONES * 0x20) | x) & HIGH);
        if stop != 0 {
            return n + (stop.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + b[n..]
        .iter()
        .position(|&c| !plain(c))
        .unwrap_or(b.len() - n)
}

/// A byte a string may hold as it is on this path: ASCII JSON allows unescaped (not a control
/// byte), but the quote and the backslash (the first ends the string; the second is an
/// escape, left to serde).
fn plain(c: u8) -> bool {
    (0x20..0x80).contains(&c) && c != b'"' && c != b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight at a time finds the same end as one at a time, wherever the stop byte sits.
    #[test]
    fn plain_run_matches_the_byte_loop() {
        let naive = |b: &[u8]| b.iter().position(|&c| !plain(c)).unwrap_or(b.len());
        for stop in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xc3, 0xff] {
            for len in 0..40 {
                for at in 0..=len {
                    let mut b = vec![b'a'; len];
                    if at < len {
                        b[at] = stop;
                    }
                    assert_eq!(plain_run(&b), naive(&b), "stop {stop:#x} at {at} of {len}");
                }
            }
        }
        assert_eq!(plain_run(b" !#[~]0x1f"), 10);
    }

    #[test]
    fn members_are_found_and_the_rest_is_checked() {
        let m = single(br#" {"params":[1],"x":{"y":[true]},"method":"m","id":7,"jsonrpc":"2.0"} "#)
            .expect("the usual shape");
        assert_eq!(m.jsonrpc, Some(&br#""2.0""#[..]));
        assert_eq!(m.id, Some(&b"7"[..]));
        assert_eq!(m.method, Some(&br#""m""#[..]));
        assert_eq!(m.params, Some(&b"[1]"[..]));
        for not_scanned in [
            &br#"{"id":01}"#[..],
            br#"{"id":1,}"#,
            br#"{"id":"\n"}"#,
            br#"{"id":1,"id":2}"#,
            br#"{"id":1.}"#,
            br#"{"id":-}"#,
            br#"{"id":1e}"#,
            br#"{"id":nul}"#,
            br#"{"id":1} x"#,
            b"{\"id\":\"caf\xc3\xa9\"}",
            b"{\"id\":1}\x0c",
        ] {
            assert!(
                single(not_scanned).is_none(),
                "{:?}",
                String::from_utf8_lossy(not_scanned)
            );
        }
        assert_eq!(batch(br#"[{},{"id":1}]"#, 2).map(|v| v.len()), Some(2));
        assert!(batch(br#"[{},{},{}]"#, 2).is_none());
        assert!(batch(b"[]", 2).is_none());
        assert!(batch(br#"[{},1]"#, 2).is_none());
        let deep = format!("{{\"params\":{}{}}}", "[".repeat(70), "]".repeat(70));
        assert!(single(deep.as_bytes()).is_none());
    }
}
