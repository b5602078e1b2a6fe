//! One fuzz input for the checkpoint target: the three files a checkpoint
//! loader parses, packed as `EKCP` then, per part, a u32 little-endian length
//! and the bytes. Lengths past the end are clamped, so every byte string is a
//! valid container (missing parts are empty).

pub const MAGIC: &[u8; 4] = b"EKCP";
/// config.json, model.safetensors, state.json.
pub const PARTS: usize = 3;
pub const PART_NAMES: [&str; PARTS] = ["config.json", "model.safetensors", "state.json"];

pub fn pack(parts: &[Vec<u8>; PARTS]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

pub fn unpack(input: &[u8]) -> [Vec<u8>; PARTS] {
    let mut parts: [Vec<u8>; PARTS] = Default::default();
    let mut rest = input.strip_prefix(MAGIC.as_slice()).unwrap_or(input);
    for part in parts.iter_mut() {
        if rest.len() < 4 {
            break;
        }
        let n = (u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize).min(rest.len() - 4);
        *part = rest[4..4 + n].to_vec();
        rest = &rest[4 + n..];
    }
    parts
}
