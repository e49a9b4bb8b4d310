//! Just enough DER to take the RSA public key out of a SubjectPublicKeyInfo. ring verifies with a
//! PKCS#1 `RSAPublicKey`, while keys are distributed as PEM `PUBLIC KEY` (SPKI).

/// rsaEncryption, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Splits one tag-length-value off `input`: (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

pub fn rsa_public_key_from_spki(spki: &[u8]) -> Option<Vec<u8>> {
    let (0x30, body, []) = tlv(spki)? else {
        return None;
    };
    let (0x30, algorithm, rest) = tlv(body)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (0x03, bits, []) = tlv(rest)? else {
        return None;
    };
    // A BIT STRING starts with the count of unused bits, which is 0 for a DER key.
    let (0, key) = bits.split_first()? else {
        return None;
    };
    let (0x30, _, []) = tlv(key)? else {
        return None;
    };
    Some(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_truncated_and_foreign_input() {
        assert!(rsa_public_key_from_spki(&[]).is_none());
        assert!(rsa_public_key_from_spki(&[0x30, 0x05, 0x30]).is_none());
        // An EC key's SPKI (id-ecPublicKey) is not RSA.
        let ec = [
            0x30, 0x13, 0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x03,
            0x06, 0x00, 0x30, 0x03, 0x02, 0x01, 0x01,
        ];
        assert!(rsa_public_key_from_spki(&ec).is_none());
    }
}
