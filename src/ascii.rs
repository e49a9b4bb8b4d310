//! Numbers written as ASCII decimal into wire buffers (HTTP/1.1 heads, RESP commands), without
//! the formatting machinery: a length is written on every request.

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_radix::<10>(out, n);
}

/// Appends `n` in upper-case hexadecimal (HTTP/1.1 chunk sizes).
pub(crate) fn push_hex(out: &mut Vec<u8>, n: u64) {
    push_radix::<16>(out, n);
}

// A constant radix lets the compiler turn the divisions into multiplications and shifts.
fn push_radix<const RADIX: u64>(out: &mut Vec<u8>, mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    // u64::MAX has 20 decimal digits, fewer in any larger radix.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = DIGITS[(n % RADIX) as usize];
        n /= RADIX;
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

    #[test]
    fn hex_is_written_as_display_writes_it() {
        for n in (0..=300).chain([4096, 65_535, u64::MAX]) {
            let mut out = b"x".to_vec();
            super::push_hex(&mut out, n);
            assert_eq!(out, format!("x{n:X}").into_bytes());
        }
    }
}
