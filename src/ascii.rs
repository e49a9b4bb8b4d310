//! Numbers written as ASCII decimal into wire buffers (HTTP/1.1 heads, RESP commands), without
//! the formatting machinery: a length is written on every request.

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_written_as_display_writes_them() {
        // Every octet of an IPv4 address (X-Forwarded-For), and lengths up to the largest.
        for n in (0..=255).chain([1000, 65_535, u64::MAX]) {
            let mut out = b"x".to_vec();
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
