//! What makes two inbound HL7 messages "the same message", sans-IO.
//!
//! A sender that retransmits (no ACK came, the connection dropped) sends the
//! same message again, sometimes with a new MSH-7. Many senders also reuse
//! MSH-10 for *different* messages (test systems, engines that restart their
//! counter). So a duplicate is a stored message with the same sender keys
//! (MSH-3, MSH-4, MSH-10) **and** the same [`digest`]: the SHA-256 of the
//! message bytes with MSH-7 blanked, a leading byte-order mark dropped and
//! line endings (`\r\n`, `\n`) read as `\r`, trailing terminators ignored.
//!
//! The digest works on bytes, before any character-set decoding, so it can be
//! recomputed from the stored raw message alone (replay and verification
//! rebuild the duplicate table from the log).

/// The content digest of one message (lowercase hex SHA-256), see the module doc.
pub fn digest(raw: &[u8]) -> String {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut first = true;
    let segments = raw
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|s| !s.is_empty());
    for segment in segments {
        if first && segment.starts_with(b"MSH") && segment.len() > 3 {
            let sep = segment[3];
            // From MSH-1 on, element k is MSH-(k+1); MSH-7 is element 6.
            for (k, field) in segment[3..].split(|&b| b == sep).enumerate() {
                if k > 0 {
                    ctx.update(&[sep]);
                }
                if k != 6 {
                    ctx.update(field);
                }
            }
            ctx.update(b"\r");
        } else {
            ctx.update(segment);
            ctx.update(b"\r");
        }
        first = false;
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::digest;

    const A01: &[u8] = b"MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|C1|P|2.5.1\rPID|1||M1^^^TH^MR||Doe^Jane\rPV1|1|I|3W^0^0^TH\r";

    #[test]
    fn a_resend_with_another_msh7_or_line_ending_is_the_same_message() {
        let d = digest(A01);
        assert_eq!(d.len(), 64);
        let later = String::from_utf8_lossy(A01).replace("20261127101500", "20261127101733");
        assert_eq!(digest(later.as_bytes()), d);
        let crlf = String::from_utf8_lossy(A01).replace('\r', "\r\n");
        assert_eq!(digest(crlf.as_bytes()), d);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(A01);
        assert_eq!(digest(&bom), d);
    }

    #[test]
    fn other_content_under_the_same_control_id_differs() {
        let d = digest(A01);
        let other = String::from_utf8_lossy(A01).replace("Doe^Jane", "Roe^Rick");
        assert_ne!(digest(other.as_bytes()), d);
        // MSH-7 is blanked, not removed: a value moved into MSH-8 differs.
        let moved = String::from_utf8_lossy(A01).replace("20261127101500|", "|20261127101500");
        assert_ne!(digest(moved.as_bytes()), d);
        let trigger = String::from_utf8_lossy(A01).replace("ADT^A01", "ADT^A28");
        assert_ne!(digest(trigger.as_bytes()), d);
        // Nothing to read is still a digest, never a panic.
        assert_eq!(digest(b"").len(), 64);
        assert_eq!(digest(b"MSH").len(), 64);
    }
}
