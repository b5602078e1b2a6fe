//! Mutations: generic byte edits (bit flips, interesting values, truncation,
//! splicing, inserts, deletes) plus edits that know the formats: every
//! count, length, type id, dimension and offset of a GGUF header, and every
//! number, key and dtype of the JSON headers of a checkpoint.

use crate::container;
use serde_json::Value as Json;

/// SplitMix64: small, seedable, good enough for choosing mutations.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    // An endless generator, not an iterator: `Iterator::next` would return an Option.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    Gguf,
    Checkpoint,
}

impl Mutator {
    /// A mutant of `input`; `others` are corpus entries for splicing.
    pub fn mutate(self, rng: &mut Rng, input: &[u8], others: &[&[u8]]) -> Vec<u8> {
        match self {
            Mutator::Gguf => mutate_gguf(rng, input, others),
            Mutator::Checkpoint => mutate_checkpoint(rng, input, others),
        }
    }
}

const INTERESTING: &[u64] = &[
    0, 1, 2, 3, 4, 7, 8, 12, 13, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 257, 1024, 4096, 65535, 65536, 0x7fff_ffff, 0x8000_0000,
    0xffff_ffff, 0x1_0000_0000, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, u64::MAX, u64::MAX - 1, u64::MAX / 2 + 1,
];

fn interesting(rng: &mut Rng, old: u64, file_len: u64, pos: u64) -> u64 {
    match rng.below(10) {
        0..=4 => INTERESTING[rng.below(INTERESTING.len())],
        5 => file_len.wrapping_sub(pos).wrapping_sub(rng.below(16) as u64),
        6 => old.wrapping_add(1 + rng.below(4) as u64),
        7 => old.wrapping_sub(1 + rng.below(4) as u64),
        8 => old.wrapping_mul(2 + rng.below(1000) as u64),
        _ => old ^ (1 << rng.below(64)),
    }
}

fn write_le(buf: &mut [u8], at: usize, width: usize, v: u64) {
    if at + width <= buf.len() {
        buf[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

fn read_le(buf: &[u8], at: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    if at + width <= buf.len() {
        b[..width].copy_from_slice(&buf[at..at + width]);
    }
    u64::from_le_bytes(b)
}

/// A position, biased towards the first `hot` bytes (headers).
fn pos_in(rng: &mut Rng, len: usize, hot: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if hot > 0 && hot < len && rng.chance(85) {
        rng.below(hot)
    } else {
        rng.below(len)
    }
}

/// One generic byte-level edit.
pub fn byte_edit(rng: &mut Rng, buf: &mut Vec<u8>, hot: usize, others: &[&[u8]]) {
    let len = buf.len();
    match rng.below(11) {
        0 | 1 if len > 0 => {
            let at = pos_in(rng, len, hot);
            buf[at] ^= 1 << rng.below(8);
        }
        2 if len > 0 => {
            let at = pos_in(rng, len, hot);
            buf[at] = [0, 0xff, 0x7f, 0x80, 1, b'"', b'{', b'[', b'-', b'9'][rng.below(10)];
        }
        3 | 4 if len > 0 => {
            let at = pos_in(rng, len, hot);
            let width = [2, 4, 8][rng.below(3)];
            let old = read_le(buf, at, width);
            write_le(buf, at, width, interesting(rng, old, len as u64, at as u64));
        }
        5 if len > 0 => {
            // Truncate, mostly inside the header.
            let at = pos_in(rng, len, hot);
            buf.truncate(at);
        }
        6 if !others.is_empty() => {
            // Splice: a range of another input at the same offset.
            let other = others[rng.below(others.len())];
            if !other.is_empty() {
                let at = pos_in(rng, other.len().min(len.max(1)), hot);
                let n = 1 + rng.below(64.min(other.len() - at.min(other.len() - 1)));
                let src = &other[at.min(other.len() - 1)..(at + n).min(other.len())];
                if at + src.len() <= len {
                    buf[at..at + src.len()].copy_from_slice(src);
                } else {
                    buf.truncate(at.min(len));
                    buf.extend_from_slice(src);
                }
            }
        }
        7 if len > 0 => {
            // Delete a range.
            let at = pos_in(rng, len, hot);
            let n = 1 + rng.below(32.min(len - at));
            buf.drain(at..at + n);
        }
        8 => {
            // Insert random or repeated bytes.
            let at = pos_in(rng, len + 1, hot).min(len);
            let n = 1 + rng.below(16);
            let fill: Vec<u8> = if rng.chance(50) { (0..n).map(|_| rng.next() as u8).collect() } else { vec![buf.get(at).copied().unwrap_or(0); n] };
            buf.splice(at..at, fill);
        }
        9 if len > 8 => {
            // Copy a chunk over another place.
            let (a, b) = (pos_in(rng, len, hot), pos_in(rng, len, hot));
            let n = 1 + rng.below(32.min(len - a.max(b)));
            let chunk = buf[a..a + n].to_vec();
            buf[b..b + n].copy_from_slice(&chunk);
        }
        _ => {
            // Append garbage.
            let n = 1 + rng.below(32);
            buf.extend((0..n).map(|_| rng.next() as u8));
        }
    }
}

// ---------------------------------------------------------------- GGUF ----

/// A numeric field of a GGUF header.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub width: usize,
}

/// Walks a GGUF header leniently, listing where every count, length, type
/// id, dim and offset lies; stops where the bytes stop making sense.
/// Returns the fields and the end of the header (tensor infos).
pub fn gguf_fields(b: &[u8]) -> (Vec<Field>, usize) {
    let mut f = Vec::new();
    let mut pos = 8usize; // magic, version
    f.push(Field { at: 4, width: 4 });
    let rd = |at: usize, w: usize| if at + w <= b.len() { Some(read_le(b, at, w)) } else { None };
    let Some(n_tensors) = rd(pos, 8) else { return (f, b.len()) };
    f.push(Field { at: pos, width: 8 });
    let Some(n_kv) = rd(pos + 8, 8) else { return (f, b.len()) };
    f.push(Field { at: pos + 8, width: 8 });
    pos += 16;
    fn skip_string(b: &[u8], pos: &mut usize, f: &mut Vec<Field>) -> Option<()> {
        let n = if *pos + 8 <= b.len() { read_le(b, *pos, 8) } else { return None };
        f.push(Field { at: *pos, width: 8 });
        *pos = pos.checked_add(8)?.checked_add(usize::try_from(n).ok()?)?;
        (*pos <= b.len()).then_some(())
    }
    fn skip_value(b: &[u8], pos: &mut usize, ty: u64, f: &mut Vec<Field>, depth: usize) -> Option<()> {
        let size = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return skip_string(b, pos, f),
            9 if depth < 4 => {
                let et = if *pos + 4 <= b.len() { read_le(b, *pos, 4) } else { return None };
                f.push(Field { at: *pos, width: 4 });
                let n = if *pos + 12 <= b.len() { read_le(b, *pos + 4, 8) } else { return None };
                f.push(Field { at: *pos + 4, width: 8 });
                *pos += 12;
                if n > 100_000 {
                    return None;
                }
                for _ in 0..n {
                    skip_value(b, pos, et, f, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        if size >= 4 {
            f.push(Field { at: *pos, width: size });
        }
        *pos += size;
        (*pos <= b.len()).then_some(())
    }
    for _ in 0..n_kv.min(10_000) {
        if skip_string(b, &mut pos, &mut f).is_none() {
            return (f, b.len());
        }
        let Some(ty) = rd(pos, 4) else { return (f, b.len()) };
        f.push(Field { at: pos, width: 4 });
        pos += 4;
        if skip_value(b, &mut pos, ty, &mut f, 0).is_none() {
            return (f, b.len());
        }
    }
    for _ in 0..n_tensors.min(10_000) {
        if skip_string(b, &mut pos, &mut f).is_none() {
            return (f, b.len());
        }
        let Some(nd) = rd(pos, 4) else { return (f, b.len()) };
        f.push(Field { at: pos, width: 4 });
        pos += 4;
        for _ in 0..nd.min(8) {
            f.push(Field { at: pos, width: 8 });
            pos += 8;
        }
        f.push(Field { at: pos, width: 4 }); // type
        f.push(Field { at: pos + 4, width: 8 }); // offset
        pos += 12;
        if pos > b.len() {
            return (f, b.len());
        }
    }
    (f, pos)
}

fn mutate_gguf(rng: &mut Rng, input: &[u8], others: &[&[u8]]) -> Vec<u8> {
    let mut buf = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let (fields, header_end) = gguf_fields(&buf);
        if !fields.is_empty() && rng.chance(55) {
            let fld = fields[rng.below(fields.len())];
            let old = read_le(&buf, fld.at, fld.width);
            let v = interesting(rng, old, buf.len() as u64, fld.at as u64);
            write_le(&mut buf, fld.at, fld.width, v);
        } else if rng.chance(5) && header_end < buf.len() {
            // Data-region damage (NaN/inf halves and floats, random scales).
            let at = header_end + rng.below(buf.len() - header_end);
            let pat: &[u8] = [&[0x00, 0x7e][..], &[0x00, 0x7c], &[0x00, 0x00, 0xc0, 0x7f], &[0x00, 0x00, 0x80, 0x7f], &[0xff, 0xff]][rng.below(5)];
            let end = (at + pat.len()).min(buf.len());
            buf[at..end].copy_from_slice(&pat[..end - at]);
        } else {
            let hot = header_end.min(buf.len());
            byte_edit(rng, &mut buf, hot, others);
        }
    }
    buf
}

// ---------------------------------------------------------- checkpoint ----

fn mutate_checkpoint(rng: &mut Rng, input: &[u8], others: &[&[u8]]) -> Vec<u8> {
    let mut parts = container::unpack(input);
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let which = [0, 1, 1, 1, 2][rng.below(5)];
        let other_parts: Vec<Vec<u8>> = others.iter().map(|o| container::unpack(o)[which].clone()).collect();
        let other_refs: Vec<&[u8]> = other_parts.iter().map(Vec::as_slice).collect();
        let part = &mut parts[which];
        if which == 1 {
            mutate_safetensors(rng, part, &other_refs);
        } else if rng.chance(70) {
            if let Some(new) = mutate_json_text(rng, part) {
                *part = new;
            } else {
                byte_edit(rng, part, 0, &other_refs);
            }
        } else {
            byte_edit(rng, part, 0, &other_refs);
        }
    }
    container::pack(&parts)
}

const JSON_NUMBERS: &[&str] = &[
    "0", "-1", "1", "2", "3", "7", "64", "65536", "65537", "1024", "4294967295", "4294967296", "9007199254740993", "18446744073709551615",
    "18446744073709551616", "-9223372036854775808", "1e300", "-1e300", "1e-300", "0.5", "1.5", "-0.0", "100000000",
];

fn random_json(rng: &mut Rng) -> Json {
    match rng.below(8) {
        0 => Json::Null,
        1 => Json::Bool(rng.chance(50)),
        2 => Json::String(["", "x", "tiny", "F32", "e2e", "\u{0}"][rng.below(6)].into()),
        3 => Json::Array(vec![]),
        4 => Json::Object(Default::default()),
        _ => serde_json::from_str(JSON_NUMBERS[rng.below(JSON_NUMBERS.len())]).unwrap_or(Json::Null),
    }
}

/// Paths to every value of a JSON document, parents before children.
fn json_paths(v: &Json, path: &mut Vec<Json>, out: &mut Vec<Vec<Json>>) {
    out.push(path.clone());
    match v {
        Json::Object(m) => {
            for (k, c) in m {
                path.push(Json::String(k.clone()));
                json_paths(c, path, out);
                path.pop();
            }
        }
        Json::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(Json::from(i));
                json_paths(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Json, path: &[Json]) -> Option<&'a mut Json> {
    let mut cur = v;
    for p in path {
        cur = match p {
            Json::String(k) => cur.as_object_mut()?.get_mut(k)?,
            Json::Number(i) => cur.as_array_mut()?.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// One structural edit of a JSON document.
pub fn mutate_json(rng: &mut Rng, doc: &mut Json) {
    let mut paths = Vec::new();
    json_paths(doc, &mut Vec::new(), &mut paths);
    let path = paths[rng.below(paths.len())].clone();
    // Numbers are what sizes are made of: prefer them.
    let numeric: Vec<&Vec<Json>> = paths.iter().filter(|p| at_path(&mut doc.clone(), p).is_some_and(|v| v.is_number())).collect();
    let path = if !numeric.is_empty() && rng.chance(60) { numeric[rng.below(numeric.len())].clone() } else { path };
    let Some(slot) = at_path(doc, &path) else { return };
    match rng.below(6) {
        0..=2 => *slot = random_json(rng),
        3 => {
            if let Some(n) = slot.as_u64() {
                *slot = Json::from(interesting(rng, n, 1 << 20, 0));
            } else {
                *slot = random_json(rng);
            }
        }
        4 => match slot {
            Json::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(rng.below(m.len())).cloned().expect("non-empty");
                m.remove(&k);
            }
            Json::Array(a) if !a.is_empty() => {
                if rng.chance(50) {
                    a.remove(rng.below(a.len()));
                } else {
                    let c = a[rng.below(a.len())].clone();
                    a.push(c);
                }
            }
            _ => *slot = random_json(rng),
        },
        _ => {
            if let Json::Object(m) = slot {
                m.insert(["base", "extra", "vfm", "class_names", "dtype", "shape", "data_offsets"][rng.below(7)].into(), random_json(rng));
            } else {
                *slot = random_json(rng);
            }
        }
    }
}

fn mutate_json_text(rng: &mut Rng, text: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Json = serde_json::from_slice(text).ok()?;
    mutate_json(rng, &mut doc);
    Some(serde_json::to_vec(&doc).expect("a Value serialises"))
}

/// safetensors: u64 header length, JSON header, data. Edits the header as
/// JSON (shapes, dtypes, offsets), the length field, or bytes.
fn mutate_safetensors(rng: &mut Rng, st: &mut Vec<u8>, others: &[&[u8]]) {
    let header_len = if st.len() >= 8 { read_le(st, 0, 8) as usize } else { 0 };
    let ok_header = header_len > 0 && header_len.checked_add(8).is_some_and(|end| end <= st.len());
    match rng.below(10) {
        0..=5 if ok_header => {
            let Ok(mut doc) = serde_json::from_slice::<Json>(&st[8..8 + header_len]) else {
                byte_edit(rng, st, 8 + header_len, others);
                return;
            };
            // Focus on one tensor's entry most of the time.
            if let Some(m) = doc.as_object_mut().filter(|m| !m.is_empty() && rng.chance(80)) {
                let k = m.keys().nth(rng.below(m.len())).cloned().expect("non-empty");
                let entry = m.get_mut(&k).expect("present");
                if rng.chance(30) {
                    if let Some(e) = entry.as_object_mut() {
                        e.insert("dtype".into(), Json::String(["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "X", ""][rng.below(12)].into()));
                    }
                } else {
                    mutate_json(rng, entry);
                }
            } else {
                mutate_json(rng, &mut doc);
            }
            let mut h = serde_json::to_vec(&doc).expect("serialises");
            while h.len() % 8 != 0 {
                h.push(b' ');
            }
            let mut out = (h.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&h);
            out.extend_from_slice(&st[8 + header_len..]);
            *st = out;
        }
        6 => {
            let v = interesting(rng, header_len as u64, st.len() as u64, 0);
            write_le(st, 0, 8, v);
        }
        _ => {
            let hot = if ok_header { 8 + header_len } else { st.len().min(4096) };
            byte_edit(rng, st, hot, others);
        }
    }
}
